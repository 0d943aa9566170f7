#!/usr/bin/env bash
# Session 12, last device seconds: does the kNN preset train on an H200 at the preset's shape (16 x 2048,
# eager through the wrapper, bf16), and how fast? 8M tokens, evaluation on 0.2 MB. Carry .whl, .runs, .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --batch 16 --seq 2048 --set knn_layers=5, --set knn_memory_size=65536"
OUT=$OUT/probe_knn PACK=1 RUN_TIMEOUT=150 EVAL_MARGIN=25 GPUS=0 \
    COMMON="--corpus linux_c --eval-bytes 2e5 --log-every 50 --tokens 8e6" \
    RUNS="ours:$P --seed 0" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | grep -E "tokens_per_s|Error|error|result|bpb" | cut -c1-400 | tail -n 12
