#!/usr/bin/env bash
# Session 28 (issue 15, goal 1): the XL 1024 + 1024 with x-transformers' value residual and U-net skips
# (s28_callC.sh, compiled, 100M tokens, seed 0), then a screen of the preset with its logits soft-capped at 15
# (logit_softcap=15: no parameter, no draw, so it pairs with the twenty-seventh session's preset run at seed 0,
# bench/results/2026-12-03_h200_d394d9a/q100m_vrunet_s0_all.jsonl:quality_0_ours, 0.7886), one after the other.
# Run from the repository root, carrying .whl, .corpora/xz and .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
X="--preset long-documents --xl-match-params --batch 32 --seq 1024 --seg 1024 --mem 1024 --optimizer muon --muon-lr 3e-3"
X="$X --xl-set add_value_residual=true --xl-set learned_value_residual_mix=false --xl-set unet_skips=true"
OUT=$OUT/q100m_xl1024_vrunet_s0 PACK=1 RUN_TIMEOUT=300 EVAL_MARGIN=25 GPUS=0 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="xl:$X --seed 0" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 3
RUN_TIMEOUT=262 RUNLIST="softcap15_s0|ours|--seed 0 --set logit_softcap=15" bash .runs/s27_pair.sh
