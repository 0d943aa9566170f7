#!/usr/bin/env bash
# Session 23 (issue 15, goal 1), prepared in session 22: Muon 3e-3, seed 0, 16 x 2048, side by side:
# (1) ours with --muon-split-qkv (queries, keys and values of each fused projection orthogonalised apart, as the XL's
#     separate layers are), paired against bench/results/2026-12-01_h200_2667e6b q100m_muon_s0 quality_1_ours (0.8300);
# (2) ours_nostate with its feed-forward widened to the preset's parameter count (ff_mult 4.75: 19.926M), the run that
#     died in session 22's call D ("unspecified launch failure"); against the same 0.8300 (same data, other weights).
# First, about 40 s: the GPU tests of train.py's Muon, --muon-split-qkv's among them (tests/test_gpu.py -k muon).
# Run from the repository root as .runs/s23_callA.sh, carrying .whl, .corpora/xz and .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
SITE=/tmp/site
python3 -m pip install -q --no-index --no-deps --target "$SITE" .whl/beartype-*.whl
mkdir -p $OUT/tests
PYTHONPATH=$PWD:$SITE timeout 60 python3 -m pytest -p no:cacheprovider -m gpu -rA tests/test_gpu.py -k muon \
    > $OUT/tests/gpu_tests.txt 2>&1
grep -E "PASSED|FAILED|ERROR|passed|failed" $OUT/tests/gpu_tests.txt | tail -n 4
P="--preset long-documents --no-compile --batch 16 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --seed 0"
OUT=$OUT/q100m_muon_split_nostate_ff PACK=1 RUN_TIMEOUT=520 EVAL_MARGIN=25 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="ours:$P --muon-split-qkv ; ours_nostate:$P --set ff_mult=4.75" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 6
