#!/usr/bin/env bash
# Session 16, call W (issue 15): the seed-2 screen (call S: warmup 50 left the ~2 bits/byte plateau at step 600, the
# preset at 1,050, ours_unread at 850) at 100M tokens: the preset with a 50-step warmup at seeds 2, 1, 0, and, so that
# the peer gets the same schedule, x-transformers' XL 1024 + 1024 (like for like, compiled) with a 50-step warmup at
# seed 2. linux_c, 16 x 2048, not compiled, two runs per GPU (run i on GPU i mod 2). Paired with the 200-step-warmup
# runs at each seed. Carry .whl, .runs, .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --batch 16 --seq 2048 --warmup 50"
X="--preset long-documents --xl-match-params --batch 16 --seq 1024 --warmup 50"
OUT=$OUT/q100m_warmup50 PACK=1 RUN_TIMEOUT=560 EVAL_MARGIN=30 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="ours:$P --seed 2 ; ours:$P --seed 1 ; ours:$P --seed 0 ; xl:$X --seg 1024 --mem 1024 --seed 2" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 12
