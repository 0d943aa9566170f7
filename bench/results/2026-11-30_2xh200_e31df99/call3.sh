#!/usr/bin/env bash
# Session 15, call 3 (issue 15): GPU 1, the preset at seed 2 again, alone on its GPU (call 2 put it at 0.9649, 0.074
# behind its ours_unread pair): 100M tokens, not compiled. GPU 0: the GPU tests of the code the fourteenth session's
# reviews changed (flash band, MemoryRows, documents with resets, the TrainStep graphs reading documents in bf16).
# Carry .whl, .runs, .corpora/xz.
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9; export PYTHONUNBUFFERED=1; mkdir -p $OUT/t
(OUT=$OUT/rerun GPUS=1 RUN_TIMEOUT=420 EVAL_MARGIN=40 PACK=1 COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 100e6" \
    RUNS="ours:--preset long-documents --no-compile --batch 16 --seq 2048 --seed 2" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 3) &
sleep 20
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/beartype*.whl 2>&1 | tail -1
CUDA_VISIBLE_DEVICES=0 PYTHONPATH=$PWD:/tmp/site timeout 380 python3 -m pytest -p no:cacheprovider -q -m gpu tests/test_gpu.py \
    -k "reading_documents or band or memory_rows or resets_train" > $OUT/t/gpu_tests.txt 2>&1
tail -n 15 $OUT/t/gpu_tests.txt; wait
