#!/usr/bin/env bash
# Prepared in session 15 (issue 15): a screen of what makes the preset's seed 2 leave the ~2 bits/byte plateau sooner
# (bench/RESULTS.md, fifteenth session: first under 1.2 at step 1,200, seeds 0 and 1 at 800 and 600). Six runs at seed 2,
# three per GPU (run i on GPU i mod 2), each with the 100M-token schedule but stopped ~290 s after it starts (about
# 1,400 steps at three runs a GPU; cut: true) and evaluated; the training loss every 50 steps says when each fell.
# The preset; zero_init_state_reads; all_layers_qk_rmsnorm; ours_unread (the reference: step 1,000 at 100M); lr 1e-3;
# warmup 50. bench/quality_table.py prints each run's first logged step under 1.2. Then run the ones that fall
# sooner at 100M tokens and three seeds (s16_callA.sh, s16_callB.sh). Carry .whl, .runs, .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --batch 16 --seq 2048 --seed 2"
OUT=$OUT/q_screen_seed2 PACK=1 RUN_TIMEOUT=330 EVAL_MARGIN=40 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 50 --tokens 100e6" \
    RUNS="ours:$P ; ours:$P --set zero_init_state_reads=true ; ours:$P --set all_layers_qk_rmsnorm=true ; ours_unread:$P ; ours:$P --lr 1e-3 ; ours:$P --warmup 50" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 16
