#!/usr/bin/env bash
# Session 18 (issue 15): detach_block_memories=true (the XL memories' gradient stopped at every block, the states
# keeping theirs) in the preset, seed 0, warmup 50, 100M tokens of linux_c, with and without the state's reads,
# both on one H200. Pairs: quality_0 with R/q100m_warmup50 quality_2 (the preset, seed 0); quality_1 with
# D/q100m_seg4096 quality_2 (ours_unread, seed 0); quality_0 with quality_1 (the state's reads with the option).
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --batch 16 --seq 2048 --warmup 50 --set detach_block_memories=true --seed 0"
OUT=$OUT/q100m_detach_s0 PACK=1 RUN_TIMEOUT=570 EVAL_MARGIN=30 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="ours:$P ; ours_unread:$P" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 6
