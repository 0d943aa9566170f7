#!/usr/bin/env bash
# session 9, call 3 (issue 16): knn_speed.py --profile (kernel time per training step and evaluation
# segment) for query_routed (GPU 0) and exact knn (GPU 1), side by side.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
python3 -m pip install -q --no-index --no-deps --target /tmp/site $(ls .whl/*.whl | grep -v block_recurrent) 2>/dev/null
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
for v in query_routed:0 knn:1; do
  CUDA_VISIBLE_DEVICES=${v#*:} timeout -k 5 200 python3 bench/knn_speed.py --variant ${v%:*} --impl ${v%:*} \
      --cases train --steps 3 --profile --out $OUT/profile_${v%:*}.jsonl > $OUT/profile_${v%:*}.log 2>&1 &
done
wait
grep -A17 "eval segment\|full store, knn" $OUT/profile_query_routed.log | head -60
