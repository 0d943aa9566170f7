#!/usr/bin/env bash
# Session 22 (issue 15, goal 1): the XL 1024 + 1024 on 32 rows (call D) beat itself on 16 by 0.028; ours on 8 rows
# (call A) lost 0.035 to 16. Ours on 32 x 2048 (64k tokens a step, 1,526 steps), Muon 3e-3, seed 0, alone on the card,
# against q100m_muon_s0 quality_1_ours (16 x 2048: 0.8300; same initial weights). --stop-after keeps an evaluation
# inside the device time left. Run from the repository root as .runs/s22_callE.sh, carrying .whl, .corpora/xz, .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --batch 32 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --seed 0"
OUT=$OUT/q100m_muon_b32_s0 PACK=1 RUN_TIMEOUT=300 EVAL_MARGIN=25 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="ours:$P" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 4
