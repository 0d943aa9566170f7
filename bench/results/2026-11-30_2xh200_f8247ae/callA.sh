#!/usr/bin/env bash
# session 10, call A (issue 15, goal 3, the paired comparison): 100M tokens, not compiled, 16 x 2048, the
# long-documents preset on linux_c. GPU 0: ours_unread (the preset with its state reads held at zero: same
# initial weights, same qk-rmsnorm) at seeds 0 and 1; GPU 1: the preset and the preset without recurrent
# layers at seed 1 (their seed-0 runs are session 9's, same model code). Carry .whl, .runs, .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
OUT=$OUT/q_paired PACK=1 RUN_TIMEOUT=545 EVAL_MARGIN=45 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 100e6 --preset long-documents --no-compile --batch 16 --seq 2048" \
    RUNS="ours_unread:--seed 0 ; ours:--seed 1 ; ours_unread:--seed 1 ; ours_nostate:--seed 1" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 16
