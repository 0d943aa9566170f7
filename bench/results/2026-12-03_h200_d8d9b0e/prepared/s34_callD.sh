#!/usr/bin/env bash
# Prepared in session 33: the GPU tests of attention_gate (new) and the other mixing options, at their small test
# shapes, each case in its own pytest call with its own limit, so that a case cut by its limit loses no other's
# report: compiled graph-replayed decoding equals the full forward and the compiled CUDA-graph TrainStep reading
# documents matches eager (the mixing=True cases: value_residual, unet_skips, embedding_mixing, attention_gate with
# gates of their own, the cap), then the two-blocks compiled case cut by the limit in the thirty-second session.
# About 150-400 s. Run from the repository root as .runs/s34_callD.sh, carrying .whl.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
mkdir -p /tmp/site
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
T=tests/test_gpu.py
for case in "$T::test_cuda_graph_decoding_equals_the_full_forward[False-True-True-False-True]|120" \
            "$T::test_cuda_graph_train_step_reading_documents_matches_eager[True-True-False-1-True]|120" \
            "$T::test_cuda_graph_train_step_reading_documents_matches_eager[True-True-False-2-False]|150"; do
    IFS='|' read -r name limit <<< "$case"
    PYTHONPATH=$PWD:/tmp/site timeout $limit python3 -m pytest -p no:cacheprovider -m gpu -rA "$name" 2>&1 | tail -n 12
    echo "rc ${PIPESTATUS[0]} for $name at ${SECONDS} s"
done
