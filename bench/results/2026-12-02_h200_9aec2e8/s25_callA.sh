#!/usr/bin/env bash
# Prepared in session 24 (issue 15, goal 3: does the state pay with more training?). 200M tokens (twice the budget
# of every earlier run), the preset as train.py trains it (Muon 3e-3 per map, 16 x 2048, compiled), seed 0, alone on
# the card; about 410 s (compilation 154-207 s, then ~195 s of training at ~1.03M tokens/s). Its partner is
# s25_callB.sh (ours_unread: the same initial weights and data, the state's reads held at zero), and the peer
# s25_callC.sh (the XL 1024 + 1024 at 200M tokens on its best shape). At 100M tokens the state's reads were worth
# 0.0034 under Muon on whole matrices (twenty-second session) and the recurrent layer 0.0001 against the same
# parameters in the feed-forward (twenty-third).
# Run from the repository root as .runs/s25_callA.sh, carrying .whl, .corpora/xz and .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --batch 16 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --muon-split-qkv --seed 0"
OUT=$OUT/q200m_ours_s0 PACK=1 RUN_TIMEOUT=570 EVAL_MARGIN=30 GPUS=0 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 200e6" RUNS="ours:$P" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 2
