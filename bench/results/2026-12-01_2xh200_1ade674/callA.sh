#!/usr/bin/env bash
# Session 17, call A (issue 15, goal 3): does the state pay when trained through more blocks, now that the 50-step
# warmup ends the early plateau? (Every earlier run that trained the state past the XL window used warmup 200, and at
# seed 2 the state's reads delayed the plateau's end: 1,050 against ours_unread's 850.) Seed 0, warmup 50, 100M tokens
# of linux_c, not compiled, two runs per GPU (run i on GPU i mod 2):
#   0: the preset with segments of 4096 (four blocks of 1024, 8 rows);  1: the same, state reads held at zero (paired)
#   2: ours_unread in the preset's shape (16 x 2048; pairs with session 16's q100m_warmup50 quality_2)
#   3: run 0 with the gate's channels spread over half-lives of 1..64 blocks (fixed_gate_max_half_life=64)
# Carry .whl, .runs, .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --warmup 50 --seed 0"
S4="$P --set max_seq_len=4096 --batch 8 --seq 4096"
OUT=$OUT/q100m_seg4096 PACK=1 RUN_TIMEOUT=565 EVAL_MARGIN=30 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="ours:$S4 ; ours_unread:$S4 ; ours_unread:$P --batch 16 --seq 2048 ; ours:$S4 --set fixed_gate_max_half_life=64" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 9
