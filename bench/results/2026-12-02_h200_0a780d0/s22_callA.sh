#!/usr/bin/env bash
# Session 22 (issue 15, goal 1), prepared in session 21: ours with Muon 3e-3 on the XL's 16k tokens a step (8 x 2048:
# 6,104 steps to 100M tokens, the XL's count) and ours with Muon 6e-3 on the preset's 16 x 2048, seed 0, side by side.
# Against q100m_muon_s0 quality_1_ours (Muon 3e-3, 16 x 2048, seed 0; the 8 x 2048 run reads other documents, so
# that pair is unpaired in data) and the XL 1024 + 1024 with Muon (q100m_xl_muon_s0 quality_0_xl: 0.8128).
# Run from the repository root as .runs/s22_callA.sh, carrying .whl, .corpora/xz and .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --seq 2048 --warmup 50 --optimizer muon --seed 0"
OUT=$OUT/q100m_muon_b8_lr6_s0 PACK=1 RUN_TIMEOUT=580 EVAL_MARGIN=25 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="ours:$P --batch 8 --muon-lr 3e-3 ; ours:$P --batch 16 --muon-lr 6e-3" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 6
