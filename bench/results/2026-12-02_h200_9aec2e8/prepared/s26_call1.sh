#!/usr/bin/env bash
# Prepared in session 25 (issue 15, goal 1's trend: at 200M tokens the XL 1024 + 1024's lead fell from 0.017 to
# 0.002). The preset at 400M tokens, seed 0, alone on the card, one run over two calls through --checkpoint on the
# warm machine's /tmp: this call compiles (~145 s) and trains until --stop-after (550 s after its start), then saves
# the run; s26_call2.sh continues it (and runs the resume's GPU test). If this call happens to finish the run, it
# evaluates and writes no checkpoint, and s26_call2.sh only runs the test.
# Run from the repository root as .runs/s26_call1.sh, carrying .whl, .corpora/xz and .runs; make the next call at
# once (a machine idle 30 s is given back, and the checkpoint with it).
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
mkdir -p /tmp/ckpt && rm -f /tmp/ckpt/q400m_ours_s0.pt
P="--preset long-documents --batch 16 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --muon-split-qkv --seed 0"
OUT=$OUT/q400m_ours_s0_c1 PACK=1 RUN_TIMEOUT=590 EVAL_MARGIN=40 GPUS=0 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 400e6 --checkpoint /tmp/ckpt/q400m_ours_s0.pt" \
    RUNS="ours:$P" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 3
ls -la /tmp/ckpt
