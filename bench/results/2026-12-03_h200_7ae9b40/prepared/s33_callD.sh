#!/usr/bin/env bash
# Prepared in session 32 (issue 15), if device time is left after s33_callA-C: the compiled CUDA-graph TrainStep
# cases reading documents that the thirty-first and thirty-second sessions' time limits cut (they passed in the
# thirtieth; the thirty-second ran the embedding_mixing cases, both passed), then train.py --preset long-documents
# for 60 steps on linux_c (its first GPU run with qk-rmsnorm in every layer, 32 rows and wsd).
# About 300 s. Run from the repository root as .runs/s33_callD.sh, carrying .whl and .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
mkdir -p /tmp/site $OUT/tests
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
T=tests/test_gpu.py::test_cuda_graph_train_step_reading_documents_matches_eager
PYTHONPATH=$PWD:/tmp/site timeout 200 python3 -m pytest -p no:cacheprovider -m gpu -rA "$T[True-False-True-1-False]" \
    "$T[True-True-True-1-False]" "$T[True-True-False-1-False]" "$T[True-True-False-2-False]" \
    > $OUT/tests/gpu_tests_callD.txt 2>&1
grep -E "passed|failed|PASSED|FAILED|Error" $OUT/tests/gpu_tests_callD.txt | tail -n 8
echo "elapsed $SECONDS s"
# train.py's preset on the first 20 MB of linux_c's training split (documents each ended by a NUL byte; train.py
# splits it 90/5/5, so its final evaluation reads 1 MB each of validation and test)
xz -dc .corpora/xz/linux_c.train.bin.xz | head -c 20000000 > /tmp/linux_c.bin
PYTHONPATH=$PWD:/tmp/site timeout 240 python3 train.py --preset long-documents --data /tmp/linux_c.bin --doc-separator 0 \
    --max-steps 60 --eval-interval 30 --sample-interval 0 --out-dir /tmp/trainpy > $OUT/trainpy_stdout.txt 2>&1
cp /tmp/trainpy/metrics.jsonl $OUT/trainpy_metrics.jsonl
tail -n 25 $OUT/trainpy_stdout.txt
echo "elapsed $SECONDS s"
