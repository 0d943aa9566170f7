#!/usr/bin/env bash
# Session 18 (issue 15, goal 1): the preset with a peak rate of 1e-3 instead of 6e-4 (warmup 50), seeds 0 and 1,
# 100M tokens of linux_c, both runs on one H200. Pairs: R/q100m_warmup50 quality_2 (seed 0), quality_1 (seed 1).
# Why: ours takes 32k tokens a step (16 x 2048), the XL 16k (16 x 1024), so ours makes half the optimizer steps.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --batch 16 --seq 2048 --warmup 50 --lr 1e-3"
OUT=$OUT/q100m_lr1e3_s01 PACK=1 RUN_TIMEOUT=570 EVAL_MARGIN=30 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="ours:$P --seed 0 ; ours:$P --seed 1" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 6
