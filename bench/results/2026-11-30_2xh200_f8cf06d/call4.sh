#!/usr/bin/env bash
# session 8, call 4 (issue 15, goal 3): the state's gradient through more blocks. The long-documents
# preset and the same without recurrent layers, 100M tokens, seed 0, not compiled: segments of 8192
# (8 blocks, 4 rows) on GPU 0, segments of 4096 (4 blocks, 8 rows) on GPU 1; 32k tokens per step each.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
export COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 100e6 --preset long-documents --no-compile --seed 0" PACK=1 RUN_TIMEOUT=540 EVAL_MARGIN=45
S8="--set max_seq_len=8192 --batch 4 --seq 8192"
S4="--set max_seq_len=4096 --batch 8 --seq 4096"
OUT=$OUT/q_bptt8 GPUS=0 RUNS="ours:$S8 ; ours_nostate:$S8" bash bench/quality_gpu.sh &
OUT=$OUT/q_bptt4 GPUS=1 RUNS="ours:$S4 ; ours_nostate:$S4" bash bench/quality_gpu.sh &
wait
