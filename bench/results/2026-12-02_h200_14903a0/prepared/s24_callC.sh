#!/usr/bin/env bash
# Prepared in session 23 (issue 15, goal 1): is the XL 1024 + 1024's remaining lead (0.013-0.017 on the same 32k
# tokens a step) its shape (32 documents a step, one segment of 1024 each) or its layers? Muon 3e-3, seed 0, 100M
# tokens, side by side:
# (1) ours_nostate (no recurrent layer: our XL; its feed-forward widened to the preset's parameter count, ff_mult
#     4.75: 19.93M) with --muon-split-qkv on the XL's shape, 32 x 1024, one block of 1024 a segment (max_seq_len
#     1024), against the XL 1024 + 1024 on 32 x 1024 (0.7851, bench/results/2026-12-02_h200_0a780d0
#     q100m_muon_nostate_ff_xl32 quality_1_xl) and the same ours_nostate on 16 x 2048 (0.8022,
#     bench/results/2026-12-02_h200_14903a0 q100m_muon_split_nostate_ff_alone);
# (2) the XL 1024 + 1024 on ours' shape, 16 x 2048 (two segments of 1024 a sample), against its 32 x 1024 (0.7851).
# Run from the repository root as .runs/s24_callC.sh, carrying .whl, .corpora/xz and .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
N="--preset long-documents --no-compile --batch 32 --seq 1024 --warmup 50 --optimizer muon --muon-lr 3e-3 --seed 0"
X="--preset long-documents --xl-match-params --batch 16 --seq 2048 --warmup 200 --optimizer muon --muon-lr 3e-3 --seed 0"
OUT=$OUT/q100m_nostate_b32s1024_xl1024_b16s2048 PACK=1 RUN_TIMEOUT=580 EVAL_MARGIN=25 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="ours_nostate:$N --muon-split-qkv --set max_seq_len=1024 --set ff_mult=4.75 ; xl:$X --seg 1024 --mem 1024" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 6
