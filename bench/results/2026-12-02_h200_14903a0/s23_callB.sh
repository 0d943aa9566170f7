#!/usr/bin/env bash
# Session 23 (issue 15, goal 1), prepared in session 22: Muon 3e-3, seed 0, 32 rows a step, side by side:
# (1) ours on 32 x 2048 with --muon-split-qkv, paired against session 22's q100m_muon_b32_s0 quality_0_ours (0.8251);
# (2) x-transformers' XL 512 + 512 like for like on 32 x 1024 (goal 1's first part at the rows that made the XL 1024 +
#     1024 0.028 better), against bench/results/2026-12-01_h200_2667e6b q100m_xl_muon_s0 quality_1_xl (16 rows: 0.8730).
# Run from the repository root as .runs/s23_callB.sh, carrying .whl, .corpora/xz and .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --batch 32 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --seed 0"
X="--preset long-documents --xl-match-params --batch 32 --seq 1024 --warmup 200 --optimizer muon --muon-lr 3e-3 --seed 0"
OUT=$OUT/q100m_muon_split_b32_xl512_b32 PACK=1 RUN_TIMEOUT=580 EVAL_MARGIN=25 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="ours:$P --muon-split-qkv ; xl:$X --seg 512 --mem 512" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 6
