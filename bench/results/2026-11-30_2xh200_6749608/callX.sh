#!/usr/bin/env bash
# Session 16, call X (issue 15): call W's 50-step warmup fixed seed 2 (0.9649 -> 0.8729) but cost seeds 0 and 1
# (+0.0045, +0.0190). A 100-step warmup at seeds 2, 1, 0 (between the two), and ours_unread with the 50-step warmup at
# seed 2 (paired with call W's seed-2 run: do the state's reads still cost once the plateau is gone?). linux_c,
# 16 x 2048, not compiled, two runs per GPU (run i on GPU i mod 2). Carry .whl, .runs, .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --batch 16 --seq 2048"
OUT=$OUT/q100m_warmup100 PACK=1 RUN_TIMEOUT=560 EVAL_MARGIN=30 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="ours:$P --warmup 100 --seed 2 ; ours:$P --warmup 100 --seed 1 ; ours:$P --warmup 100 --seed 0 ; ours_unread:$P --warmup 50 --seed 2" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 9
