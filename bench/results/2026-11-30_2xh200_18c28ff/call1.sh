#!/usr/bin/env bash
# session 9, call 1 (issue 16, on the final kNN code): GPU 0 runs the kNN search GPU tests, then
# knn_speed.py for knn and query_routed one after the other; GPU 1 meanwhile trains passkey knn_top128
# alone. Then passkey knn (GPU 0) and query_routed (GPU 1), each alone.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
python3 -m pip install -q --no-index --no-deps --target /tmp/site $(ls .whl/*.whl | grep -v block_recurrent) 2>/dev/null
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
OUT_ROOT=$OUT
mkdir -p $OUT_ROOT/speed
(
  CUDA_VISIBLE_DEVICES=0 timeout -k 5 120 python3 -m pytest -q -m gpu tests/test_gpu.py \
      -k "routed_search_on_cuda or fused_search or knn_layer or torch_path" > $OUT_ROOT/gpu_tests.txt 2>&1
  echo "gpu tests rc $?" >> $OUT_ROOT/gpu_tests.txt
  for v in knn query_routed; do
    CUDA_VISIBLE_DEVICES=0 timeout -k 5 110 python3 bench/knn_speed.py --variant $v --impl $v \
        --cases train,eval --steps 3 --fillers 262144 --trials 50 --out $OUT_ROOT/speed/knn_speed_$v.jsonl \
        > $OUT_ROOT/speed/knn_speed_$v.log 2>&1
    echo "knn_speed $v rc $?" >> $OUT_ROOT/speed/knn_speed_$v.log
  done
) &
OUT=$OUT_ROOT/passkey_top128 VARIANTS="knn_top128" GPUS=1 TRAIN_SECONDS=200 MAX_SECONDS=330 \
    bash bench/passkey_gpu.sh > $OUT_ROOT/passkey_top128_summary.txt 2>&1 &
wait
OUT=$OUT_ROOT/passkey_pair VARIANTS="knn query_routed" TRAIN_SECONDS=200 MAX_SECONDS=330 \
    bash bench/passkey_gpu.sh > $OUT_ROOT/passkey_pair_summary.txt 2>&1
tar -C $OUT_ROOT -czf $OUT_ROOT/records.tgz speed passkey_top128 passkey_pair && rm -rf $OUT_ROOT/speed $OUT_ROOT/passkey_top128 $OUT_ROOT/passkey_pair
tail -n 6 $OUT_ROOT/gpu_tests.txt; tail -n 14 $OUT_ROOT/passkey_top128_summary.txt; tail -n 16 $OUT_ROOT/passkey_pair_summary.txt
