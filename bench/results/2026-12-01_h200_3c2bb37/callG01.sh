#!/usr/bin/env bash
# Session 20 (issue 15, goal 3): a segment-length warmup. The preset (16 x 2048, two blocks a segment) for the
# first 1,000 steps, past the early plateau (seed 0 leaves it near step 700), then 8 x 4096 (four blocks a
# segment: the state's write is trained for reads up to three blocks on, past the XL window) to the end of
# 100M tokens. ours and ours_unread at seed 0 side by side, paired with each other (goal 3) and, for their
# first 1,000 steps, with the preset's runs at seed 0 (q100m_warmup50 quality_2, q100m_seg4096 quality_2).
# Beside them, 30 s in: the five GPU tests that call M01's time limit cut (TrainStep reading documents).
# Run from the repository root, carrying .whl and .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --batch 16 --seq 2048 --warmup 50 --grow-at 1000 --grow-batch 8 --grow-seq 4096"
(OUT=$OUT/q100m_grow_s0 PACK=1 RUN_TIMEOUT=585 EVAL_MARGIN=25 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="ours:$P --seed 0 ; ours_unread:$P --seed 0" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 6) &
sleep 30
mkdir -p $OUT/tests
T=tests/test_gpu.py::test_cuda_graph_train_step_reading_documents_matches_eager
PYTHONPATH=$PWD:/tmp/site timeout 420 python3 -m pytest -p no:cacheprovider -m gpu -rA \
    "$T[True-True-True-1]" "$T[False-True-False-1]" "$T[True-True-False-1]" "$T[False-True-False-2]" "$T[True-True-False-2]" \
    > $OUT/tests/gpu_tests.txt 2>&1
grep -E "PASSED|FAILED|ERROR|passed|failed" $OUT/tests/gpu_tests.txt | tail -n 12
wait
