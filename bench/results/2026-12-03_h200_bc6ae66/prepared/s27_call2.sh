#!/usr/bin/env bash
# Prepared in session 26: x-transformers' XL 1024 + 1024 like for like on 32 x 1024 at 400M tokens, seed 1 (its
# 200-step warmup, Muon 3e-3), alone on the card: ~663 s of training at 603k tokens/s, one run over two calls through
# --checkpoint on the warm machine's /tmp (session 26: 559 s, then 206 s). This call trains until --stop-after and
# saves; s27_call3.sh finishes and evaluates: make that call at once (a machine idle 30 s is given back, and the
# checkpoint with it).
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
mkdir -p /tmp/ckpt && rm -f /tmp/ckpt/q400m_xl1024_b32_s1.pt
X="--preset long-documents --xl-match-params --batch 32 --seq 1024 --seg 1024 --mem 1024 --optimizer muon"
X="$X --muon-lr 3e-3 --seed 1"
OUT=$OUT/q400m_xl1024_b32_s1_c1 PACK=1 RUN_TIMEOUT=585 EVAL_MARGIN=40 GPUS=0 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 400e6 \
            --checkpoint /tmp/ckpt/q400m_xl1024_b32_s1.pt" \
    RUNS="xl:$X" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 3
ls -la /tmp/ckpt
