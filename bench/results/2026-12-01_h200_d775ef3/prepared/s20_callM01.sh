#!/usr/bin/env bash
# Prepared in session 19 for the next (issue 15, goal 1): the preset with an XL memory of two blocks
# (--set xl_memory_blocks=2: a block's queries reach 2,048-3,072 tokens back instead of 1,024-2,048; no
# parameters, so the same initial weights and documents as the preset at the same seed), seeds 0 and 1,
# 100M tokens of linux_c, warmup 50, two runs on one H200. Attention over 3,072 keys instead of 2,048 and
# three flash calls in segments where a row reset: expect a slower run; one past 560 s says cut: true.
# Pairs: bench/results/2026-11-30_2xh200_6749608/q100m_warmup50_all.jsonl quality_2 (seed 0), quality_1 (seed 1).
# Beside them, 30 s in (as call F01): the GPU tests of this session's two options, never run on a GPU since their
# last change (token_shift's decoding failed in F01 and was fixed; xl_memory_blocks' three flash calls and TrainStep's
# graphs with two-block memories), with their neighbours. Their first ~800 steps run slower for it.
# Run from the repository root, carrying .whl and .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --batch 16 --seq 2048 --warmup 50 --set xl_memory_blocks=2"
(OUT=$OUT/q100m_xl2_s01 PACK=1 RUN_TIMEOUT=585 EVAL_MARGIN=25 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="ours:$P --seed 0 ; ours:$P --seed 1" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 6) &
sleep 30
mkdir -p $OUT/tests
PYTHONPATH=$PWD:/tmp/site timeout 420 python3 -m pytest -p no:cacheprovider -m gpu tests/test_gpu.py -rA \
    -k "decoding_equals_the_full or train_step_matches_eager or memory_rows or reading_documents" \
    > $OUT/tests/gpu_tests.txt 2>&1
grep -E "PASSED|FAILED|ERROR|passed|failed" $OUT/tests/gpu_tests.txt | tail -n 30
wait
