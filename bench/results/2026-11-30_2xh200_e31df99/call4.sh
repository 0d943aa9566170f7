#!/usr/bin/env bash
# Prepared in session 14 (issue 15, goal 2 at a third seed, and where the documents step's time goes). GPU 0: the
# preset, 180 s, seed 2, compiled; then a kernel profile of the step training on documents runs (memories and states
# carried, rows starting documents at linux_c's rate). GPU 1: the XL 1024 + 1024 like for like, 180 s, seed 2,
# started 185 s later (as session 14's call 3: its compilation apart from ours'). Carry .whl, .runs, .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --batch 16 --seq 2048"
X="--preset long-documents --xl-match-params --batch 16 --seq 1024"
export COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --seconds 180" PACK=1 EVAL_MARGIN=30
mkdir -p $OUT/profile
(
  OUT=$OUT/t180_ours_s2 RUN_TIMEOUT=450 GPUS=0 RUNS="ours:$P --seed 2" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 2
  CUDA_VISIBLE_DEVICES=0 PYTHONPATH=$PWD:$PWD/bench:/tmp/site timeout 150 python3 bench/profile_step.py \
      --cfg long-documents --shape 16x2048 --documents --steps 20 --profile-steps 10 > $OUT/profile/preset_documents.txt 2>&1
) &
sleep 185
OUT=$OUT/t180_xl1024_s2 RUN_TIMEOUT=270 GPUS=1 RUNS="xl:$X --seg 1024 --mem 1024 --seed 2" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 2 &
wait
grep -v Warn $OUT/profile/preset_documents.txt | tail -n 36
