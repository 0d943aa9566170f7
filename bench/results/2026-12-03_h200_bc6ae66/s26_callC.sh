#!/usr/bin/env bash
# Session 26, call C: the preset at 400M tokens, seed 0 (as train.py trains it: Muon 3e-3 per map, 16 x 2048,
# compiled), alone on the card. Compiling (~145 s) and ~385 s of training may just fit one call; if --stop-after
# (545 s after its start) comes first, the run is saved to the warm machine's /tmp and s26_callD.sh finishes it.
# Make the next call at once.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
mkdir -p /tmp/ckpt && rm -f /tmp/ckpt/q400m_ours_s0.pt
P="--preset long-documents --batch 16 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --muon-split-qkv --seed 0"
OUT=$OUT/q400m_ours_s0_c1 PACK=1 RUN_TIMEOUT=585 EVAL_MARGIN=40 GPUS=0 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 400e6 --checkpoint /tmp/ckpt/q400m_ours_s0.pt" \
    RUNS="ours:$P" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 3
ls -la /tmp/ckpt
