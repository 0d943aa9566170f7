#!/usr/bin/env bash
# Prepared in session 26: the end of s27_call1.sh's run, only if that call saved it (the same flags; it resumes).
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
[ -f /tmp/ckpt/q400m_ours_s1.pt ] || { echo "no checkpoint: call 1 finished the run, or the machine went"; exit 3; }
P="--preset long-documents --batch 16 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --muon-split-qkv --seed 1"
OUT=$OUT/q400m_ours_s1_c2 PACK=1 RUN_TIMEOUT=585 EVAL_MARGIN=40 GPUS=0 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 400e6 --checkpoint /tmp/ckpt/q400m_ours_s1.pt" \
    RUNS="ours:$P" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 3
