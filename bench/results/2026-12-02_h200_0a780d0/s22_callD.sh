#!/usr/bin/env bash
# Session 22 (issue 15, goal 1: why the XL 1024 + 1024 gains more from Muon), Muon 3e-3, seed 0, side by side:
# (1) ours_nostate (no recurrent layer) with its feed-forward widened to ours' parameter count (ff_mult 4.75: 19.926M
#     against 19.928M): does the state's layer cost what the XL spends on a wider feed-forward? Against
#     q100m_muon_s0 quality_1_ours (0.8300; same data, other initial weights);
# (2) the XL 1024 + 1024 like for like on 32 x 1024 (32k tokens a step, ours' count: 3,052 steps) instead of 16 x 1024:
#     do its 6,104 steps explain its lead? Against q100m_xl_muon_s0 quality_0_xl (0.8128; same initial weights).
# Run from the repository root as .runs/s22_callD.sh, carrying .whl, .corpora/xz and .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --batch 16 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --seed 0"
X="--preset long-documents --xl-match-params --batch 32 --seq 1024 --warmup 200 --optimizer muon --muon-lr 3e-3 --seed 0"
OUT=$OUT/q100m_muon_nostate_ff_xl32 PACK=1 RUN_TIMEOUT=580 EVAL_MARGIN=25 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="ours_nostate:$P --set ff_mult=4.75 ; xl:$X --seg 1024 --mem 1024" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 6
