#!/usr/bin/env bash
# session 10, call B (issue 15): 100M tokens on linux_c, the current document reader. GPU 0: the
# long-documents preset with recurrent_layers_qk_rmsnorm=false (its recurrent layer attends with plain
# scaled dot products, as the others; the state's own attention keeps its qk-rmsnorm), not compiled,
# seeds 0 and 1; GPU 1: x-transformers' XL 1024 + 1024 and 512 + 512, seed 0 (the peers on this reader).
# Two runs share each GPU. Carry .whl, .runs, .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --batch 16 --seq 2048 --set recurrent_layers_qk_rmsnorm=false"
X="--batch 16 --seq 1024 --xl-match-params"
OUT=$OUT/q_noqk PACK=1 RUN_TIMEOUT=550 EVAL_MARGIN=45 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 100e6" \
    RUNS="ours:$P --seed 0 ; xl:$X --seg 1024 --mem 1024 --seed 0 ; ours:$P --seed 1 ; xl:$X --seg 512 --mem 512 --seed 0" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 16
