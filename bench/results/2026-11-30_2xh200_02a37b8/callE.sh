#!/usr/bin/env bash
# session 11, call E (issue 15, goal 2): 180 s of training each, one run per GPU, seed 0, linux_c, compiled.
# GPU 0: the long-documents preset with kv_heads=4 (call C's best), then the GPU test of the compiled documents
# TrainStep with the preset's options (now kv_heads=4 among them); GPU 1: x-transformers' XL 1024 + 1024, then
# 512 + 512. Carry .whl, .runs, .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --set kv_heads=4 --batch 16 --seq 2048"
X="--batch 16 --seq 1024 --xl-match-params"
export COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --seconds 180" PACK=1 EVAL_MARGIN=25
(
  OUT=$OUT/t180_ours RUN_TIMEOUT=400 GPUS=0 RUNS="ours:$P --seed 0" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 4
  CUDA_VISIBLE_DEVICES=0 PYTHONPATH=$PWD:/tmp/site timeout -k 5 150 python3 -m pytest -q -m gpu tests/test_gpu.py \
      -k "reading_documents" > $OUT/gpu_tests.txt 2>&1
  echo "gpu tests rc $?"
) &
(
  OUT=$OUT/t180_xl1024 RUN_TIMEOUT=270 GPUS=1 RUNS="xl:$X --seg 1024 --mem 1024 --seed 0" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 4
  OUT=$OUT/t180_xl512 RUN_TIMEOUT=270 GPUS=1 RUNS="xl:$X --seg 512 --mem 512 --seed 0" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 4
) &
wait
tail -n 15 $OUT/gpu_tests.txt
