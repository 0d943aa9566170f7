#!/usr/bin/env bash
# session 10, call C (issue 15): 100M tokens on linux_c, all 4 MB of held-out documents evaluated (the first
# 50, 1 MB, are the documents of the other runs). GPU 0: the long-documents preset with plain_output_init=true
# (the recurrent layer's output projection initialised at a plain layer's scale), not compiled, seeds 0
# and 1; GPU 1: x-transformers' XL 1024 + 1024 and 512 + 512, seed 1. Carry .whl, .runs, .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --batch 16 --seq 2048 --set plain_output_init=true"
X="--batch 16 --seq 1024 --xl-match-params"
OUT=$OUT/q_init PACK=1 RUN_TIMEOUT=550 EVAL_MARGIN=45 \
    COMMON="--corpus linux_c --eval-bytes 4e6 --log-every 200 --tokens 100e6" \
    RUNS="ours:$P --seed 0 ; xl:$X --seg 1024 --mem 1024 --seed 1 ; ours:$P --seed 1 ; xl:$X --seg 512 --mem 512 --seed 1" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 8
