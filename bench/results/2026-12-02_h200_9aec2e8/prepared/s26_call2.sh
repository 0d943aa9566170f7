#!/usr/bin/env bash
# Prepared in session 25: the end of s26_call1.sh's run (the same flags; it resumes from the checkpoint), then the
# resume's GPU test (tests/test_quality_bench.py -m gpu: ours through CUDA graphs and the XL, ~1-2 min).
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --batch 16 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --muon-split-qkv --seed 0"
if [ -f /tmp/ckpt/q400m_ours_s0.pt ]; then
    OUT=$OUT/q400m_ours_s0_c2 PACK=1 RUN_TIMEOUT=400 EVAL_MARGIN=40 GPUS=0 \
        COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 400e6 --checkpoint /tmp/ckpt/q400m_ours_s0.pt" \
        RUNS="ours:$P" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 3
else
    echo "no checkpoint in /tmp/ckpt: call 1 finished the run, or the machine was replaced (then call 1 again)"
fi
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
PYTHONPATH=$PWD:/tmp/site timeout 170 python3 -m pytest -q -m gpu tests/test_quality_bench.py -p no:cacheprovider 2>&1 | tail -n 15
