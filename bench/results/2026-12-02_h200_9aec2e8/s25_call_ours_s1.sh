set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --batch 16 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --muon-split-qkv --seed 1"
OUT=$OUT/q200m_ours_s1 PACK=1 RUN_TIMEOUT=570 EVAL_MARGIN=30 GPUS=0 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 200e6" RUNS="ours:$P" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 2
