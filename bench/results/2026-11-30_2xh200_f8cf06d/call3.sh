#!/usr/bin/env bash
# session 8, call 3: passkey knn_top128 (GPU 0) and routed (GPU 1, evaluation batch 10: at 50 its
# 256k evaluation ran out of memory in call 1), each alone on its GPU.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
python3 -m pip install -q --no-index --no-deps --target /tmp/site $(ls .whl/*.whl | grep -v block_recurrent) 2>/dev/null
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
OUT_ROOT=$OUT
mkdir -p $OUT_ROOT/passkey
OUT=$OUT_ROOT/passkey VARIANTS="knn_top128" GPUS=0 TRAIN_SECONDS=200 MAX_SECONDS=365 bash bench/passkey_gpu.sh > $OUT_ROOT/passkey_summary.txt 2>&1 &
CUDA_VISIBLE_DEVICES=1 timeout -k 10 375 python3 bench/passkey.py --variants routed --seed 7 --train-seconds 200 \
    --fillers 65536 --long --trials 50 --eval-batch 10 --max-seconds 365 \
    --out $OUT_ROOT/passkey/passkey_routed.jsonl > $OUT_ROOT/passkey/passkey_routed.log 2>&1 &
wait
for v in knn:0 query_routed:1; do  # each kNN layer's cost, one per GPU, the same call
  CUDA_VISIBLE_DEVICES=${v#*:} timeout -k 5 140 python3 bench/knn_speed.py --variant ${v%:*} --impl ${v%:*} \
      --cases train,eval --steps 3 --fillers 262144 --trials 50 --out $OUT_ROOT/passkey/knn_speed_${v%:*}.jsonl \
      > $OUT_ROOT/passkey/knn_speed_${v%:*}.log 2>&1 &
done
wait
cat $OUT_ROOT/passkey/knn_speed_*.md
tar -C $OUT_ROOT -czf $OUT_ROOT/passkey.tgz passkey && rm -rf $OUT_ROOT/passkey
tail -n 12 $OUT_ROOT/passkey_summary.txt
