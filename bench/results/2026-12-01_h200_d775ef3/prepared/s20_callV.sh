#!/usr/bin/env bash
# Prepared in session 19 for the next: the GPU tests of this session's two options, not yet run on a GPU since
# their last change. token_shift: call F01's run of test_cuda_graph_decoding_equals_the_full_forward[True-False-True-True]
# failed (0.0031 > 1e-3: the capture's warm-up runs moved the latest input the next step read; fixed since, the
# input read from its slot); xl_memory_blocks: MemoryRows' three flash calls, and TrainStep's graphs reading
# documents with two-block memories. With their neighbours (the same tests at the other options).
# Run from the repository root, carrying .whl.
set -u
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/beartype-*.whl
mkdir -p $OUT/tests
PYTHONPATH=$PWD:/tmp/site timeout 420 python3 -m pytest -p no:cacheprovider -m gpu tests/test_gpu.py -rA \
    -k "decoding_equals_the_full or train_step_matches_eager or memory_rows or reading_documents" \
    > $OUT/tests/gpu_tests.txt 2>&1
grep -E "PASSED|FAILED|ERROR|passed|failed" $OUT/tests/gpu_tests.txt | tail -n 30
