#!/usr/bin/env bash
# Session 29, call D (issue 15, goal 1 at a second seed): x-transformers' XL 512 + 512 like for like on 32 x 1024,
# seed 1, 100M tokens, alone on the card, as the twenty-third session's seed-0 run (s23_callB.sh: 0.8460).
# Run from the repository root as .runs/s29_callD.sh, carrying .whl, .corpora/xz and .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
X="--preset long-documents --xl-match-params --batch 32 --seq 1024 --warmup 200 --optimizer muon --muon-lr 3e-3"
OUT=$OUT/q100m_xl512_b32_s1 PACK=1 RUN_TIMEOUT=300 EVAL_MARGIN=25 GPUS=0 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="xl:$X --seg 512 --mem 512 --seed 1" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 3
