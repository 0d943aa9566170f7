#!/usr/bin/env bash
# call 1: equal time (180 s, one GPU per run), seed 0, new document reader; then GPU tests.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
python3 -m pip install -q --no-index --no-deps --target /tmp/site $(ls .whl/*.whl | grep -v block_recurrent)
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
P="--emb-std 0.02 --set xpos_scale_base=1000000000 --set memory_kv_from_inputs=true --set rotary_dim=32 --set block_width=1024 --set max_seq_len=2048 --batch 16 --seq 2048"
export COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --seconds 180" PACK=1 EVAL_MARGIN=25
(
  OUT=$OUT/t180_ours RUN_TIMEOUT=400 GPUS=0 RUNS="ours:$P" bash bench/quality_gpu.sh
  CUDA_VISIBLE_DEVICES=0 timeout -k 5 170 python3 -m pytest -q -m gpu tests/test_gpu.py \
      -k "large_batch or reading_documents or knn" > $OUT/gpu_tests.txt 2>&1
  echo "gpu tests rc $?"
) &
(
  OUT=$OUT/t180_xl1024 RUN_TIMEOUT=280 GPUS=1 RUNS="xl:--batch 16 --seq 1024 --xl-match-params --seg 1024 --mem 1024" bash bench/quality_gpu.sh
  OUT=$OUT/t180_xl512 RUN_TIMEOUT=280 GPUS=1 RUNS="xl:--batch 16 --seq 1024 --xl-match-params --seg 512 --mem 512" bash bench/quality_gpu.sh
) &
wait
tail -n 30 $OUT/gpu_tests.txt
