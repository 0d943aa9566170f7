#!/usr/bin/env bash
# Prepared in session 11 (issue 15, goal 1 like for like): x-transformers' XL with ours' attention shape as the
# preset now has it, 4 key/value heads, its feed-forward matched to the preset's 19.93M parameters
# (--preset long-documents --xl-match-params), 100M tokens on linux_c, 1024 + 1024 and 512 + 512 at seeds 0 and 1.
# GPU 0: both windows at seed 0; GPU 1: at seed 1. Carry .whl, .runs, .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
X="--preset long-documents --xl-match-params --batch 16 --seq 1024"
OUT=$OUT/q_xl_kv4 PACK=1 RUN_TIMEOUT=575 EVAL_MARGIN=35 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 100e6" \
    RUNS="xl:$X --seg 1024 --mem 1024 --seed 0 ; xl:$X --seg 1024 --mem 1024 --seed 1 ; xl:$X --seg 512 --mem 512 --seed 0 ; xl:$X --seg 512 --mem 512 --seed 1" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 12
