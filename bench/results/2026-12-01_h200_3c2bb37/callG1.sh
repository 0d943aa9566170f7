#!/usr/bin/env bash
# Session 20 (issue 15, goal 3): call G01's segment-length warmup at seed 1 (ours and ours_unread side by side;
# the preset's runs at seed 1: q100m_warmup50 quality_1 for ours). Run from the repository root, carrying .whl
# and .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --batch 16 --seq 2048 --warmup 50 --grow-at 1000 --grow-batch 8 --grow-seq 4096"
OUT=$OUT/q100m_grow_s1 PACK=1 RUN_TIMEOUT=570 EVAL_MARGIN=25 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="ours:$P --seed 1 ; ours_unread:$P --seed 1" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 6
