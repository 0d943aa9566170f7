#!/usr/bin/env bash
# Session 19 (issue 15): the preset with token_shift (no parameters: the same initial weights as the
# preset at the same seed), seeds 0 and 1, 100M tokens of linux_c, warmup 50, two runs on one H200.
# Pairs: bench/results/2026-11-30_2xh200_6749608/q100m_warmup50_all.jsonl quality_2 (seed 0), quality_1 (seed 1).
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --batch 16 --seq 2048 --warmup 50 --set token_shift=true"
OUT=$OUT/q100m_shift_s01 PACK=1 RUN_TIMEOUT=585 EVAL_MARGIN=25 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="ours:$P --seed 0 ; ours:$P --seed 1" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 6
