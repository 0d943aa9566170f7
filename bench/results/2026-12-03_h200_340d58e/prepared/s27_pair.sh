#!/usr/bin/env bash
# Session 27 (issue 15, goal 1): changes to the preset at 100M tokens, Muon 3e-3 per map, 16 x 2048, CUDA graphs
# without compilation, one run after the other, each alone on the card. Each run is "NAME|MODEL|FLAGS" in $RUNLIST
# (separated by ';'), FLAGS added to the preset's; the seed is in FLAGS. Paired (same data, same initial draw: the
# options draw nothing at random) against the twenty-third session's preset runs:
#   seed 0: bench/results/2026-12-02_h200_14903a0/q100m_muon_split_nostate_ff_all.jsonl:quality_0_ours (0.8023)
#   seed 1: bench/results/2026-12-02_h200_14903a0/q100m_muon_split_s1_xl32_s1_all.jsonl:quality_0_ours
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --batch 16 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3"
P="$P --muon-split-qkv"
export COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" PACK=1 EVAL_MARGIN=25
IFS=';' read -ra runs <<< "$RUNLIST"
for run in "${runs[@]}"; do
    IFS='|' read -r name model flags <<< "$run"
    OUT=$OUT/q100m_$name RUN_TIMEOUT=${RUN_TIMEOUT:-265} GPUS=0 RUNS="$model:$P $flags" \
        bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 2
done
