#!/usr/bin/env bash
# session 9, call 4. Phase 1 (issue 16, the routed search's route now an exact search over the group
# means): GPU 0 runs the kNN GPU tests, then knn_speed.py (train, eval, --profile) for query_routed
# and then for exact knn, one after the other; GPU 1 meanwhile trains passkey query_routed alone.
# Phase 2 (issue 15): 100M tokens, seed 0, not compiled, one run per GPU: the long-documents preset
# (GPU 0) and the same with zero_init_state_reads=true (GPU 1).
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
python3 -m pip install -q --no-index --no-deps --target /tmp/site $(ls .whl/*.whl | grep -v block_recurrent) 2>/dev/null
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
OUT_ROOT=$OUT
mkdir -p $OUT_ROOT/speed
(
  CUDA_VISIBLE_DEVICES=0 timeout -k 5 100 python3 -m pytest -q -m gpu tests/test_gpu.py \
      -k "routed_search_on_cuda or fused_search or knn_layer or torch_path" > $OUT_ROOT/gpu_tests.txt 2>&1
  echo "gpu tests rc $?" >> $OUT_ROOT/gpu_tests.txt
  for v in query_routed knn; do
    CUDA_VISIBLE_DEVICES=0 timeout -k 5 100 python3 bench/knn_speed.py --variant $v --impl $v \
        --cases train,eval --steps 8 --fillers 262144 --trials 50 --profile --out $OUT_ROOT/speed/knn_speed_$v.jsonl \
        > $OUT_ROOT/speed/knn_speed_$v.log 2>&1
    echo "knn_speed $v rc $?" >> $OUT_ROOT/speed/knn_speed_$v.log
  done
) &
OUT=$OUT_ROOT/passkey_qr VARIANTS="query_routed" GPUS=1 TRAIN_SECONDS=200 MAX_SECONDS=300 \
    bash bench/passkey_gpu.sh > $OUT_ROOT/passkey_qr_summary.txt 2>&1 &
wait
tar -C $OUT_ROOT -czf $OUT_ROOT/records.tgz speed passkey_qr && rm -rf $OUT_ROOT/speed $OUT_ROOT/passkey_qr
tail -n 4 $OUT_ROOT/gpu_tests.txt; tail -n 6 $OUT_ROOT/passkey_qr_summary.txt
mkdir -p $OUT_ROOT/q_zero
OUT=$OUT_ROOT/q_zero GPUS="0 1" PACK=1 RUN_TIMEOUT=270 EVAL_MARGIN=30 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 100e6 --preset long-documents --no-compile --seed 0 --batch 16 --seq 2048" \
    RUNS="ours: ; ours:--set zero_init_state_reads=true" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 8
