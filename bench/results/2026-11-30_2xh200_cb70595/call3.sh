#!/usr/bin/env bash
# call 3: XL 512+512 x2 at 100M (GPU 0); GPU tests, ours without state seed 1, 256k trials (GPU 1).
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
python3 -m pip install -q --no-index --no-deps --target /tmp/site $(ls .whl/*.whl | grep -v block_recurrent) 2>/dev/null
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
P="--emb-std 0.02 --set xpos_scale_base=1000000000 --set memory_kv_from_inputs=true --set rotary_dim=32 --set block_width=1024 --set max_seq_len=2048 --batch 16 --seq 2048"
X="--batch 16 --seq 1024 --xl-match-params"
export COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 100e6" PACK=1 EVAL_MARGIN=30
OUT=$OUT/q100m_xl512 RUN_TIMEOUT=560 GPUS=0 RUNS="xl:$X --seg 512 --mem 512 --seed 0 ; xl:$X --seg 512 --mem 512 --seed 1" bash bench/quality_gpu.sh &
(
  export CUDA_VISIBLE_DEVICES=1
  timeout -k 5 130 python3 -m pytest -q -m gpu tests/test_gpu.py -k "large_batch or knn_layer or fused_search or torch_path" > $OUT/gpu_tests.txt 2>&1
  echo "fast gpu tests rc $?"
  OUT=$OUT/q100m_nostate RUN_TIMEOUT=300 GPUS=1 RUNS="ours_nostate:$P --seed 1" bash bench/quality_gpu.sh
  timeout -k 5 100 python3 bench/knn_speed.py --variant knn --cases eval --fillers 262144 --trials 50 --out $OUT/knn_speed_eval.jsonl > $OUT/knn_speed_eval.log 2>&1
  echo "knn_speed rc $?"
) &
wait
tail -n 15 $OUT/gpu_tests.txt; tail -n 20 $OUT/knn_speed_eval.log
