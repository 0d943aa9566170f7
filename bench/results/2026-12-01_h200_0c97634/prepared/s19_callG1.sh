#!/usr/bin/env bash
# Session 19 (issue 15, goal 2 on one schedule), for a machine with two H200 (kind nvidia-h200-x2): seed 1 at 180 s
# with the preset's 50-step warmup (seeds 0 and 2 with 50: leads 0.084, 0.082; seeds 0 and 1 with 200: 0.107, 0.117).
# GPU 0: the preset compiled; GPU 1, 20 s later: the XL 1024 + 1024 like for like (warmup 200, its better schedule at seed 2).
# Run from the repository root, carrying .whl and .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --batch 16 --seq 2048 --warmup 50"
X="--preset long-documents --xl-match-params --batch 16 --seq 1024"
export COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --seconds 180" PACK=1 EVAL_MARGIN=30
OUT=$OUT/t180_ours_w50_s1 RUN_TIMEOUT=420 GPUS=0 RUNS="ours:$P --seed 1" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 2 &
sleep 20
OUT=$OUT/t180_xl1024_s1 RUN_TIMEOUT=400 GPUS=1 RUNS="xl:$X --seg 1024 --mem 1024 --seed 1" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 2 &
wait
