#!/usr/bin/env bash
# Session 18 (issue 15, goal 1's second part): x-transformers' XL 1024 + 1024 like for like at seeds 3 and 4, 100M
# tokens of linux_c, both on one H200; pairs with D/q100m_seeds34 quality_0 (the preset, seed 3), quality_2 (seed 4).
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
X="--preset long-documents --xl-match-params --batch 16 --seq 1024 --seg 1024 --mem 1024"
OUT=$OUT/q100m_xl1024_s34 PACK=1 RUN_TIMEOUT=480 EVAL_MARGIN=30 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="xl:$X --seed 3 ; xl:$X --seed 4" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 6
