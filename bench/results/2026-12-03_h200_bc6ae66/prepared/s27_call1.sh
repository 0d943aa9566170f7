#!/usr/bin/env bash
# Prepared in session 26 (issue 15, goal 1's trend at a second seed: at 400M tokens, seed 0, the preset led the XL
# 1024 + 1024 by 0.0145, where at 100M the XL led by 0.017). The preset at 400M tokens, seed 1, alone on the card:
# compiling (~150 s) and ~387 s of training fit one call (session 26: 559 s); if --stop-after (545 s after its start)
# comes first, the run is saved to the warm machine's /tmp and s27_call1b.sh finishes it (make that call at once).
# Its peer: s27_call2.sh and s27_call3.sh. Run from the repository root as .runs/s27_call1.sh, carrying .whl,
# .corpora/xz and .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
mkdir -p /tmp/ckpt && rm -f /tmp/ckpt/q400m_ours_s1.pt
P="--preset long-documents --batch 16 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --muon-split-qkv --seed 1"
OUT=$OUT/q400m_ours_s1_c1 PACK=1 RUN_TIMEOUT=585 EVAL_MARGIN=40 GPUS=0 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 400e6 --checkpoint /tmp/ckpt/q400m_ours_s1.pt" \
    RUNS="ours:$P" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 3
ls -la /tmp/ckpt
