#!/usr/bin/env bash
# Prepared in session 11; session 13 moved the layer to the 5th (issue 15, ablations not yet run): 100M tokens on linux_c, 16 x 2048, not compiled, the
# long-documents preset (4 key/value heads) with 128 state vectors instead of 512, and with its recurrent layer
# 5th of 6 instead of 4th (nearer the paper's 10th of 12), seeds 0 and 1 each (against session 11's q100m_gqa quality_0/1_ours).
# GPU 0: both at seed 0; GPU 1: both at seed 1. Carry .whl, .runs, .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --batch 16 --seq 2048"
OUT=$OUT/q_abl_sv_pos PACK=1 RUN_TIMEOUT=575 EVAL_MARGIN=35 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 100e6" \
    RUNS="ours:$P --set num_state_vectors=128 --seed 0 ; ours:$P --set num_state_vectors=128 --seed 1 ; ours:$P --set recurrent_layers=5, --seed 0 ; ours:$P --set recurrent_layers=5, --seed 1" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 12
