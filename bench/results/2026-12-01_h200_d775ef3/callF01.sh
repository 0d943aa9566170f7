#!/usr/bin/env bash
# Session 19 (issue 15): the preset with the cosine decaying to zero instead of to lr/10 (--min-lr-ratio 0;
# the same initial weights and documents as the preset at the same seed), seeds 0 and 1, 100M tokens of
# linux_c, warmup 50, two runs on one H200. Pairs: bench/results/2026-11-30_2xh200_6749608/q100m_warmup50_all.jsonl
# quality_2 (seed 0), quality_1 (seed 1). Alongside, 30 s in: the GPU tests of token_shift (CUDA-graph
# TrainStep against eager, graph-replayed decoding against the full forward) with their neighbours.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --batch 16 --seq 2048 --warmup 50 --min-lr-ratio 0"
(OUT=$OUT/q100m_floor0_s01 PACK=1 RUN_TIMEOUT=560 EVAL_MARGIN=25 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="ours:$P --seed 0 ; ours:$P --seed 1" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 6) &
sleep 30
mkdir -p $OUT/tests
PYTHONPATH=$PWD:/tmp/site timeout 300 python3 -m pytest -p no:cacheprovider -m gpu tests/test_gpu.py -rA \
    -k "train_step_matches_eager or decoding_equals_the_full" > $OUT/tests/gpu_tests.txt 2>&1
grep -E "PASSED|FAILED|ERROR|passed|failed" $OUT/tests/gpu_tests.txt | tail -n 12
wait
