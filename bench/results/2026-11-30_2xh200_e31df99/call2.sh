#!/usr/bin/env bash
# Prepared in session 14 (issue 15). 100M tokens of linux_c, not compiled, 16 x 2048, four runs, two per GPU (run i on
# GPU i mod 2). GPU 0, goal 1's third seed (its XLs ran in session 14, call 1: q100m_xl_seed2_all.jsonl): the preset
# and ours_unread (its state reads held at zero; paired with it) at seed 2. GPU 1, goal 3 without dropout (the only
# setting where a state ever carried 0.01): the preset and ours_unread with memory and state dropout 0, seed 0.
# Carry .whl, .runs, .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --batch 16 --seq 2048"
D="$P --mem-dropout 0 --state-dropout 0"
OUT=$OUT/q100m_seed2_dropout0 PACK=1 RUN_TIMEOUT=575 EVAL_MARGIN=35 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 100e6" \
    RUNS="ours:$P --seed 2 ; ours:$D --seed 0 ; ours_unread:$P --seed 2 ; ours_unread:$D --seed 0" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 12
