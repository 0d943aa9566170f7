#!/usr/bin/env bash
# session 9, call 2 (issue 15, goal 3): 100M tokens, seed 0, not compiled, two runs per GPU.
# GPU 0: the long-documents preset (16 x 2048) with the fixed gate starting at retention 0.95, and
# the same without recurrent layers. GPU 1: the preset at 16 x 8192 (8 blocks a segment: the state's
# gradient through 7 transitions, 16 rows kept), and the same without recurrent layers.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
export COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 100e6 --preset long-documents --no-compile --seed 0" PACK=1 RUN_TIMEOUT=545 EVAL_MARGIN=45
S2="--batch 16 --seq 2048"
S8="--set max_seq_len=8192 --batch 16 --seq 8192"
OUT=$OUT/q_gate GPUS=0 RUNS="ours:$S2 --set fixed_gate_retention=0.95 ; ours_nostate:$S2" bash bench/quality_gpu.sh &
OUT=$OUT/q_rows16x8192 GPUS=1 RUNS="ours:$S8 ; ours_nostate:$S8" bash bench/quality_gpu.sh &
wait
