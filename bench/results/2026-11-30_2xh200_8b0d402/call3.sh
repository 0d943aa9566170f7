#!/usr/bin/env bash
# Session 14, call 3 (issue 15, goal 2 at a second seed). 180 s of training each, one run per GPU, seed 1, linux_c,
# compiled: GPU 0 the long-documents preset; GPU 1 x-transformers' XL 1024 + 1024 like for like, started 185 s later
# so that its compilation and first steps do not share the host with ours' compilation (in call 2 the XL's first
# 200 steps took 27.8 s while ours compiled, against ~6.5 s per 200 steps after) and the two train at the same time.
# Carry .whl, .runs, .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --batch 16 --seq 2048"
X="--preset long-documents --xl-match-params --batch 16 --seq 1024"
export COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --seconds 180" PACK=1 EVAL_MARGIN=30
OUT=$OUT/t180_ours_s1 RUN_TIMEOUT=450 GPUS=0 RUNS="ours:$P --seed 1" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 2 &
sleep 185
OUT=$OUT/t180_xl1024_s1 RUN_TIMEOUT=270 GPUS=1 RUNS="xl:$X --seg 1024 --mem 1024 --seed 1" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 2 &
wait
