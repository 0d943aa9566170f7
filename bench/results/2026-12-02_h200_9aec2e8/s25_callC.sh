#!/usr/bin/env bash
# Prepared in session 24 (issue 15, goals 1 and 3 at twice the budget): x-transformers' XL 1024 + 1024 like for like
# (Muon 3e-3, 32 x 1024, its best shape, 200-step warmup, compiled), 200M tokens, seed 0, alone on the card; about
# 370 s (~330 s of training at ~603k tokens/s). Against s25_callA.sh's preset at 200M (at 100M: the XL 0.7851, the
# preset 0.8023). The XL's memories are contiguous since 0bb0269, so its 2 untimed steps hold its compilation
# (bench/quality_table.py's start+s says so).
# Run from the repository root as .runs/s25_callC.sh, carrying .whl, .corpora/xz and .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
X="--preset long-documents --xl-match-params --batch 32 --seq 1024 --seg 1024 --mem 1024 --optimizer muon --muon-lr 3e-3"
OUT=$OUT/q200m_xl1024_b32_s0 PACK=1 RUN_TIMEOUT=570 EVAL_MARGIN=30 GPUS=0 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 200e6" RUNS="xl:$X --seed 0" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 2
