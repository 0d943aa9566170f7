#!/usr/bin/env bash
# Session 19 (issue 15, goal 1): the preset with compressed memories (use_compressed_mem: 512 more entries a block
# attends, each standing for 4 older tokens) and ff_mult 3.75, which keeps the preset's 19.93M parameters; seeds 0
# and 1, 100M tokens of linux_c, warmup 50, two runs on one H200. Compare with R/q100m_warmup50 quality_2 (seed 0), quality_1 (seed 1)
# (same documents; other initial weights: the feed-forward's width and the compressor change the draw).
# A row's compressed memory holds its last document's entries, masked, for three blocks after a reset, and with 16
# rows some row does in most segments (about 5 in 6 on this corpus): those calls take SDPA's memory-efficient kernel with a mask, not the two flash
# calls the preset makes after a reset. Expect a slower run; one past 560 s stops training and says cut: true.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --batch 16 --seq 2048 --warmup 50 --set use_compressed_mem=true --set ff_mult=3.75"
OUT=$OUT/q100m_compressed_s01 PACK=1 RUN_TIMEOUT=585 EVAL_MARGIN=25 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="ours:$P --seed 0 ; ours:$P --seed 1" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 6
