#!/usr/bin/env bash
# Session 21 (issue 15, goal 1): seed 1 of both models with Muon at 3e-3, side by side: the preset (paired against
# q100m_warmup50 quality_1_ours of bench/results/2026-11-30_2xh200_6749608) and x-transformers' XL 1024 + 1024 like
# for like (paired against q100m_xl_kv4 quality_1_xl of bench/results/2026-11-30_2xh200_d26c294). Run from the
# repository root, carrying .whl, .corpora/xz and .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --batch 16 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --seed 1"
X="--preset long-documents --xl-match-params --batch 16 --seq 1024 --warmup 200 --optimizer muon --muon-lr 3e-3 --seed 1"
OUT=$OUT/q100m_muon_s1 PACK=1 RUN_TIMEOUT=575 EVAL_MARGIN=25 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="ours:$P ; xl:$X --seg 1024 --mem 1024" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 6
