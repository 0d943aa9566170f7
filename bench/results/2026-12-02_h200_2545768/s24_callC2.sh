#!/usr/bin/env bash
# Session 24 (issue 15, goals 1 and 3): ours on the XL's shape, 32 x 1024, one block of 1024 a segment (max_seq_len
# 1024), Muon 3e-3 per map, seed 0, 100M tokens, side by side, CUDA graphs without compilation:
# (1) the preset (recurrent layer at 4th) -- against the XL 1024 + 1024 on 32 x 1024 (0.7851) and the XL 512 + 512
#     on 32 x 1024 (0.8460), and against ours on 16 x 2048 (0.8023);
# (2) ours_nostate with ff_mult 4.75 (the same parameters in the feed-forward) -- against (1) and against the same on
#     16 x 2048 (0.8022).
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
N="--preset long-documents --no-compile --batch 32 --seq 1024 --warmup 50 --optimizer muon --muon-lr 3e-3 --seed 0"
N="$N --muon-split-qkv --set max_seq_len=1024"
OUT=$OUT/q100m_b32s1024_ours_nostate PACK=1 RUN_TIMEOUT=560 EVAL_MARGIN=25 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="ours:$N ; ours_nostate:$N --set ff_mult=4.75" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 6
