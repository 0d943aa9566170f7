#!/usr/bin/env bash
# Session 21 (issue 15, goal 1): the peers with Muon at ours' rate (3e-3), seed 0, side by side: x-transformers'
# XL 1024 + 1024 and 512 + 512 like for like (as bench/results/2026-11-30_2xh200_d26c294's call A, warmup 200),
# paired against their AdamW runs there (q100m_xl_kv4_all.jsonl quality_0_xl and quality_2_xl). Run from the
# repository root, carrying .whl, .corpora/xz and .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
X="--preset long-documents --xl-match-params --batch 16 --seq 1024 --warmup 200 --optimizer muon --muon-lr 3e-3 --seed 0"
OUT=$OUT/q100m_xl_muon_s0 PACK=1 RUN_TIMEOUT=580 EVAL_MARGIN=25 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="xl:$X --seg 1024 --mem 1024 ; xl:$X --seg 512 --mem 512" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 6
