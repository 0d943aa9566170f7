#!/usr/bin/env bash
# Prepared in session 26: the end of s27_call2.sh's XL run (the same flags; it resumes from the checkpoint).
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
[ -f /tmp/ckpt/q400m_xl1024_b32_s1.pt ] || { echo "no checkpoint in /tmp/ckpt: the machine was replaced"; exit 3; }
X="--preset long-documents --xl-match-params --batch 32 --seq 1024 --seg 1024 --mem 1024 --optimizer muon"
X="$X --muon-lr 3e-3 --seed 1"
OUT=$OUT/q400m_xl1024_b32_s1_c2 PACK=1 RUN_TIMEOUT=585 EVAL_MARGIN=40 GPUS=0 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 400e6 \
            --checkpoint /tmp/ckpt/q400m_xl1024_b32_s1.pt" \
    RUNS="xl:$X" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 3
