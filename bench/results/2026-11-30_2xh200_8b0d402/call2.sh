#!/usr/bin/env bash
# Session 14, call 2 (issue 15, goal 2 after the attention changes: flash on the n x m band, and two flash calls
# selected per row where rows started a new document, instead of the masked kernel). 180 s of training each, one
# run per GPU, seed 0, linux_c, compiled, as the twelfth session's call C: GPU 0 the long-documents preset alone
# (then the GPU tests of the changes); GPU 1 x-transformers' XL like for like, 1024 + 1024 then 512 + 512 (then the
# attention kernel benchmark). Carry .whl, .runs, .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --batch 16 --seq 2048"
X="--preset long-documents --xl-match-params --batch 16 --seq 1024"
export COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --seconds 180" PACK=1 EVAL_MARGIN=30
mkdir -p $OUT/tests
(
  OUT=$OUT/t180_ours RUN_TIMEOUT=450 GPUS=0 RUNS="ours:$P --seed 0" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 4
  CUDA_VISIBLE_DEVICES=0 PYTHONPATH=$PWD:/tmp/site timeout 120 python3 -m pytest -q -m gpu tests/test_gpu.py \
      -k "band or memory_rows or resets_train or flash_backend or bf16_flash or train_step_matches_eager" > $OUT/tests/gpu_tests.txt 2>&1
) &
sleep 20  # the first invocation installs the wheels into /tmp/site; two installing at once would race
(
  OUT=$OUT/t180_xl1024 RUN_TIMEOUT=270 GPUS=1 RUNS="xl:$X --seg 1024 --mem 1024 --seed 0" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 4
  OUT=$OUT/t180_xl512 RUN_TIMEOUT=270 GPUS=1 RUNS="xl:$X --seg 512 --mem 512 --seed 0" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 4
  CUDA_VISIBLE_DEVICES=1 PYTHONPATH=$PWD:$PWD/bench:/tmp/site timeout 100 python3 bench/attention_kernels.py > $OUT/tests/attention_kernels.txt 2>&1
) &
wait
tail -n 3 $OUT/tests/gpu_tests.txt; grep -v Warn $OUT/tests/attention_kernels.txt | grep "{"
