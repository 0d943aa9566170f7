#!/usr/bin/env bash
# Session 15 (issue 15, goal 3): is it the state's far gradient into the tokens' keys/values that makes its reads
# cost when it is trained past the XL window? Blocks of 512, four per 2048-token segment (the write trained for
# reads 1-3 blocks on, 2 past the window), the preset otherwise (4 key/value heads), 16 x 2048, 70M tokens, not
# compiled, three runs per GPU, all with the same initial weights and documents per seed: the preset, the same
# with detach_state_write_kv=true (its far gradient trains the state's own parameters only), and ours_unread (its
# state reads held at zero). GPU 0 seed 0, GPU 1 seed 1. Carry .whl, .runs, .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --batch 16 --seq 2048 --set block_width=512"
D="$P --set detach_state_write_kv=true"
OUT=$OUT/q70m_b512_detach PACK=1 RUN_TIMEOUT=575 EVAL_MARGIN=45 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 70e6" \
    RUNS="ours:$P --seed 0 ; ours:$P --seed 1 ; ours:$D --seed 0 ; ours:$D --seed 1 ; ours_unread:$P --seed 0 ; ours_unread:$P --seed 1" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 14
