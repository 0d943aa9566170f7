#!/usr/bin/env bash
# Session 22 (issue 15, goals 1 and 3), prepared in session 21: with Muon 3e-3, seed 0: ours_unread (the preset with
# its state reads held at zero; paired against q100m_muon_s0 quality_1_ours: what the state is worth under Muon) and,
# side by side, x-transformers' XL 512 + 512 like for like at seed 1 (paired against q100m_xl_kv4 quality_3_xl of
# bench/results/2026-11-30_2xh200_d26c294, and against ours with Muon at seed 1, q100m_muon_s1 quality_0_ours).
# Run from the repository root as .runs/s22_callB.sh, carrying .whl, .corpora/xz and .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --batch 16 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --seed 0"
X="--preset long-documents --xl-match-params --batch 16 --seq 1024 --warmup 200 --optimizer muon --muon-lr 3e-3 --seed 1"
OUT=$OUT/q100m_muon_unread_xl512 PACK=1 RUN_TIMEOUT=580 EVAL_MARGIN=25 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="ours_unread:$P ; xl:$X --seg 512 --mem 512" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 6
