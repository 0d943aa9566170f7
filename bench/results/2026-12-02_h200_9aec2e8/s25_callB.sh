#!/usr/bin/env bash
# Prepared in session 24 (issue 15, goal 3: does the state pay with more training?). The partner of s25_callA.sh
# (the preset at 200M tokens, seed 0): ours_unread, the same model with the same initial weights and data but its
# state's reads held at zero, so that the two differ by what the state carries (paired). Compiled, alone on the
# card; about 410 s. At 100M tokens the state's reads were worth 0.0034 under Muon on whole matrices (twenty-second
# session), the recurrent layer 0.0001 against the same parameters in the feed-forward (twenty-third).
# Run from the repository root as .runs/s25_callB.sh, carrying .whl, .corpora/xz and .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --batch 16 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --muon-split-qkv --seed 0"
OUT=$OUT/q200m_ours_unread_s0 PACK=1 RUN_TIMEOUT=570 EVAL_MARGIN=30 GPUS=0 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 200e6" RUNS="ours_unread:$P" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 2
