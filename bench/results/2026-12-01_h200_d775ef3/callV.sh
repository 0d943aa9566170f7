#!/usr/bin/env bash
# Session 19: the GPU tests of token_shift again, after the decode cache's fix (call F01's run of
# test_cuda_graph_decoding_equals_the_full_forward[True-False-True-True] failed: 0.0031 > 1e-3), with the
# CUDA-graph TrainStep case of token_shift.
set -u
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/beartype-*.whl
mkdir -p $OUT/tests
PYTHONPATH=$PWD:/tmp/site timeout 170 python3 -m pytest -p no:cacheprovider -m gpu tests/test_gpu.py -rA \
    -k "decoding_equals_the_full or train_step_matches_eager" > $OUT/tests/gpu_tests_after_fix.txt 2>&1
grep -E "PASSED|FAILED|ERROR|passed|failed" $OUT/tests/gpu_tests_after_fix.txt | tail -n 12
