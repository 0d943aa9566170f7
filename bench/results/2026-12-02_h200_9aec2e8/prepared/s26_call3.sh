#!/usr/bin/env bash
# Prepared in session 25: x-transformers' XL 1024 + 1024 like for like on 32 x 1024 at 400M tokens, seed 0 (its
# 200-step warmup, Muon 3e-3), alone on the card; ~660 s of training at 603k tokens/s, so one run over two calls
# through --checkpoint: this call trains until --stop-after and saves; s26_call4.sh finishes and evaluates.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
mkdir -p /tmp/ckpt && rm -f /tmp/ckpt/q400m_xl1024_b32_s0.pt
X="--preset long-documents --xl-match-params --batch 32 --seq 1024 --seg 1024 --mem 1024 --optimizer muon --muon-lr 3e-3"
OUT=$OUT/q400m_xl1024_b32_s0_c1 PACK=1 RUN_TIMEOUT=590 EVAL_MARGIN=40 GPUS=0 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 400e6 --checkpoint /tmp/ckpt/q400m_xl1024_b32_s0.pt" \
    RUNS="xl:$X --seed 0" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 3
ls -la /tmp/ckpt
