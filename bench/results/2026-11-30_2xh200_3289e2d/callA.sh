#!/usr/bin/env bash
# Session 13 (issue 15): 100M tokens on linux_c, 16 x 2048, the long-documents preset (4 key/value heads).
# GPU 0, two runs, not compiled: the qk-rmsnorm temperature 16 instead of 8 (qk_rmsnorm_scale: the recurrent
# layer's self-attention and all three of the state's attentions), seeds 0 and 1; same parameters, so the same
# initial weights and documents as session 11's preset runs (q100m_gqa quality_0/1_ours): paired.
# GPU 1, alone: the preset with a kNN layer at layer 5 (exact search, top 32, a store of 65,536 entries a row),
# eager through the wrapper, seed 0; paired with the same preset run but for the kNN layer's two qk-norm gains.
# Carry .whl, .runs, .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --batch 16 --seq 2048"
OUT=$OUT/q100m_qk16_knn PACK=1 RUN_TIMEOUT=575 EVAL_MARGIN=40 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 100e6" \
    RUNS="ours:$P --no-compile --set qk_rmsnorm_scale=16 --seed 0 ; ours:$P --set knn_layers=5, --set knn_memory_size=65536 --seed 0 ; ours:$P --no-compile --set qk_rmsnorm_scale=16 --seed 1" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 12
