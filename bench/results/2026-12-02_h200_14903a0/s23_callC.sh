#!/usr/bin/env bash
# Session 23 (issue 15, goal 1), prepared in session 22: Muon 3e-3, seed 1, side by side:
# (1) ours with --muon-split-qkv on 16 x 2048, paired against bench/results/2026-12-01_h200_2667e6b q100m_muon_s1
#     quality_0_ours (0.8313);
# (2) x-transformers' XL 1024 + 1024 like for like on 32 x 1024 at seed 1, against q100m_muon_s1 quality_1_xl (16 rows:
#     0.8055).
# Run from the repository root as .runs/s23_callC.sh, carrying .whl, .corpora/xz and .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --batch 16 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --seed 1"
X="--preset long-documents --xl-match-params --batch 32 --seq 1024 --warmup 200 --optimizer muon --muon-lr 3e-3 --seed 1"
OUT=$OUT/q100m_muon_split_s1_xl32_s1 PACK=1 RUN_TIMEOUT=580 EVAL_MARGIN=25 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="ours:$P --muon-split-qkv ; xl:$X --seg 1024 --mem 1024" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 6
