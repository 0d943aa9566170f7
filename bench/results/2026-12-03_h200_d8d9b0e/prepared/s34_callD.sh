#!/usr/bin/env bash
# Prepared in session 33: the GPU tests of attention_gate (new) and the other mixing options, at their small test
# shapes: compiled graph-replayed decoding equals the full forward, and the compiled CUDA-graph TrainStep reading
# documents matches eager (mixing=True cases), then the two-blocks compiled case cut by the limit in the
# thirty-second session. About 150-330 s (TIMEOUT, default 330). Run from the repository root as
# .runs/s34_callD.sh, carrying .whl.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
mkdir -p /tmp/site
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
PYTHONPATH=$PWD:/tmp/site timeout ${TIMEOUT:-330} python3 -m pytest -p no:cacheprovider -m gpu -rA \
    "tests/test_gpu.py::test_cuda_graph_decoding_equals_the_full_forward[False-True-True-False-True]" \
    "tests/test_gpu.py::test_cuda_graph_train_step_reading_documents_matches_eager[True-True-False-1-True]" \
    "tests/test_gpu.py::test_cuda_graph_train_step_reading_documents_matches_eager[True-True-False-2-False]" 2>&1 | tail -n 40
echo "elapsed $SECONDS s"
