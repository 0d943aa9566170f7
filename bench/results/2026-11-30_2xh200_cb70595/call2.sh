#!/usr/bin/env bash
# call 2: equal tokens (100M), new document reader; ours compiled, 3 on GPU 0; XL 1024+1024 x2 on GPU 1.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
python3 -m pip install -q --no-index --no-deps --target /tmp/site $(ls .whl/*.whl | grep -v block_recurrent) 2>/dev/null
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
P="--emb-std 0.02 --set xpos_scale_base=1000000000 --set memory_kv_from_inputs=true --set rotary_dim=32 --set block_width=1024 --set max_seq_len=2048 --batch 16 --seq 2048"
X="--batch 16 --seq 1024 --xl-match-params"
export COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 100e6" PACK=1 RUN_TIMEOUT=570 EVAL_MARGIN=30
OUT=$OUT/q100m_ours GPUS=0 RUNS="ours:$P --seed 0 ; ours:$P --seed 1 ; ours_nostate:$P --seed 0" bash bench/quality_gpu.sh &
OUT=$OUT/q100m_xl1024 GPUS=1 RUNS="xl:$X --seg 1024 --mem 1024 --seed 0 ; xl:$X --seg 1024 --mem 1024 --seed 1" bash bench/quality_gpu.sh &
wait
