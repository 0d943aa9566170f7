#!/usr/bin/env bash
# Prepared in session 27 (issue 15, goal 1 like for like): the XL 1024 + 1024 with x-transformers' own versions of the
# two options the preset gained (add_value_residual at a fixed half-and-half mix, learned_value_residual_mix=False, as
# ours' mixes start; unet_skips, x-transformers' concatenation and projection), its feed-forward narrowed to ours'
# parameter count (--xl-match-params), 32 x 1024, Muon 3e-3, compiled, 100M tokens, seed 0: the run of the
# twenty-second session (0.7851, bench/results/2026-12-02_h200_0a780d0/q100m_muon_nostate_ff_xl32_all.jsonl:
# quality_1_xl) with those two settings added; same documents, other initial weights (the skips' projections draw).
# About 250 s. Run from the repository root as .runs/s28_callC.sh, carrying .whl, .corpora/xz and .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
X="--preset long-documents --xl-match-params --batch 32 --seq 1024 --seg 1024 --mem 1024 --optimizer muon --muon-lr 3e-3"
X="$X --xl-set add_value_residual=true --xl-set learned_value_residual_mix=false --xl-set unet_skips=true"
OUT=$OUT/q100m_xl1024_vrunet_s0 PACK=1 RUN_TIMEOUT=400 EVAL_MARGIN=25 GPUS=0 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="xl:$X --seed 0" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 3
