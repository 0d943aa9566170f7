#!/usr/bin/env bash
# Prepared in session 26 (issue 15, goal 3 at 400M tokens): ours_unread, the preset with its state's reads held at
# zero, seed 0: the same initial weights and documents as session 26's preset run at 400M (0.6836), so the two pair
# document by document (bench/quality_pairs.py). ~560 s on a fresh machine, ~460 s where the preset compiled before
# on the same warm machine; one call, or two through the checkpoint (s27_call_unread.sh again, at once, only if
# this call printed a checkpoint).
# A session's 1,800 s hold the seed-1 pair (s27_call1.sh to s27_call3.sh, ~1,430 s with the machine's start) or this
# call with one of the pair's two runs, not all three runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
mkdir -p /tmp/ckpt
P="--preset long-documents --batch 16 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --muon-split-qkv --seed 0"
OUT=$OUT/q400m_ours_unread_s0_$(date +%H%M%S) PACK=1 RUN_TIMEOUT=585 EVAL_MARGIN=40 GPUS=0 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 400e6 \
            --checkpoint /tmp/ckpt/q400m_ours_unread_s0.pt" \
    RUNS="ours_unread:$P" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 3
ls -la /tmp/ckpt
