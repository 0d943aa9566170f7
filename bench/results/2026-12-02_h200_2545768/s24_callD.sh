#!/usr/bin/env bash
# Session 24 (issue 15, goals 1 and 3): ours with blocks of 512, two a segment of 1024 (the attention window of the
# XL 512 + 512: a block's queries reach 512-1024 bytes back), on the XL's 32 x 1024, Muon 3e-3 per map, seed 0, 100M
# tokens, CUDA graphs without compilation, one run after the other, each alone on the card:
# (1) the preset at that width -- against the XL 512 + 512 on 32 x 1024 (0.8460, twenty-third session);
# (2) ours_unread (the state's reads held at zero), the same initial weights and data -- the state's worth, paired.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
N="--preset long-documents --no-compile --batch 32 --seq 1024 --warmup 50 --optimizer muon --muon-lr 3e-3 --seed 0"
N="$N --muon-split-qkv --set max_seq_len=1024 --set block_width=512"
export COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" PACK=1 EVAL_MARGIN=25
for m in ours ours_unread; do
    OUT=$OUT/q100m_b32s1024_w512_$m RUN_TIMEOUT=265 GPUS=0 RUNS="$m:$N" \
        bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 2
done
