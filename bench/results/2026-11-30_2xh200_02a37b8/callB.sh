#!/usr/bin/env bash
# Prepared in session 10 (issue 15): give the state a gradient past the XL window without losing rows or steps.
# In the preset a segment holds 2 blocks, so the state's write is trained only for the next block, which the XL
# memory already shows: nothing asks it to carry more. Here blocks of 512 in 2048-token segments (4 blocks: the
# write is trained for reads 1-3 blocks on, 2 of them past the XL window), 16 x 2048, 3,052 steps, paired with
# ours_unread. GPU 0: ours and ours_unread at seed 0; GPU 1: the same at seed 1. Carry .whl, .runs, .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --batch 16 --seq 2048 --set block_width=512"
OUT=$OUT/q_paired_b512 PACK=1 RUN_TIMEOUT=560 EVAL_MARGIN=45 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 100e6" \
    RUNS="ours:$P --seed 0 ; ours:$P --seed 1 ; ours_unread:$P --seed 0 ; ours_unread:$P --seed 1" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 12
