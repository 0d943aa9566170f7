#!/usr/bin/env bash
# Session 16, call Y (issue 15, goal 2 at seed 2 with the 50-step warmup): 180 s each, compilation excluded, started
# together. GPU 0: the preset compiled with --warmup 50; GPU 1: the XL 1024 + 1024 like for like with its 200-step
# warmup (its better schedule at 100M tokens, seed 2: 0.8674 against 0.8746 with 50). Carry .whl, .runs, .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --batch 16 --seq 2048 --warmup 50"
X="--preset long-documents --xl-match-params --batch 16 --seq 1024"
export COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --seconds 180" PACK=1 EVAL_MARGIN=30
OUT=$OUT/t180_ours_w50_s2 RUN_TIMEOUT=420 GPUS=0 RUNS="ours:$P --seed 2" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 2 &
sleep 20
OUT=$OUT/t180_xl1024_s2 RUN_TIMEOUT=400 GPUS=1 RUNS="xl:$X --seg 1024 --mem 1024 --seed 2" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 2 &
wait
