#!/usr/bin/env bash
# Prepared in session 24 (issue 15, goal 1; optional, ~230 s): the preset on the XL's shape, 32 x 1024 with one block
# of 1024 a segment (--set max_seq_len=1024), Muon 3e-3 per map, 100M tokens, seed 0, CUDA graphs without compilation,
# alone on the card. Its run in session 24's call C died after step 100 while sharing the card. With one block a
# segment the state's write gets no gradient (the package warns), so this measures the state's reads of an untrained
# write; against ours_nostate on the same shape (0.7924) and the XL 1024 + 1024 (0.7851).
# Run from the repository root as .runs/s25_callD.sh, carrying .whl, .corpora/xz and .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
N="--preset long-documents --no-compile --batch 32 --seq 1024 --warmup 50 --optimizer muon --muon-lr 3e-3 --seed 0"
OUT=$OUT/q100m_b32s1024_ours_alone PACK=1 RUN_TIMEOUT=300 EVAL_MARGIN=25 GPUS=0 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="ours:$N --muon-split-qkv --set max_seq_len=1024" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 2
