#!/usr/bin/env bash
# session 8, call 1: issue 16's passkey table (all seven variants, 4 + 3 sharing 2 GPUs); then the
# documents TrainStep GPU tests (GPU 0) and knn_speed's kernel profile of the training step (GPU 1).
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
python3 -m pip install -q --no-index --no-deps --target /tmp/site $(ls .whl/*.whl | grep -v block_recurrent) 2>/dev/null
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
OUT_ROOT=$OUT
OUT=$OUT_ROOT/passkey TRAIN_SECONDS=200 MAX_SECONDS=365 bash bench/passkey_gpu.sh > $OUT_ROOT/passkey_summary.txt 2>&1
tar -C $OUT_ROOT -czf $OUT_ROOT/passkey.tgz passkey && rm -rf $OUT_ROOT/passkey
(
  CUDA_VISIBLE_DEVICES=0 timeout -k 5 165 python3 -m pytest -q -m gpu tests/test_gpu.py -k reading_documents > $OUT_ROOT/gpu_tests.txt 2>&1
  echo "gpu tests rc $?" >> $OUT_ROOT/gpu_tests.txt
) &
(
  CUDA_VISIBLE_DEVICES=1 timeout -k 5 165 python3 bench/knn_speed.py --variant knn --cases train --steps 3 --profile \
      --out $OUT_ROOT/knn_speed_profile.jsonl > $OUT_ROOT/knn_speed_profile.log 2>&1
  echo "knn_speed rc $?" >> $OUT_ROOT/knn_speed_profile.log
) &
wait
tail -n 40 $OUT_ROOT/passkey_summary.txt; tail -n 8 $OUT_ROOT/gpu_tests.txt; tail -n 25 $OUT_ROOT/knn_speed_profile.log
