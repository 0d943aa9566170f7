#!/usr/bin/env bash
# Session 26, call A (issue 15, goal 1's trend: at 200M tokens the XL 1024 + 1024's lead fell from 0.017 to
# 0.002). First the resume's GPU test (tests/test_quality_bench.py -m gpu: ours through CUDA graphs and the XL,
# tiny, not compiled), then x-transformers' XL 1024 + 1024 like for like on 32 x 1024 at 400M tokens, seed 0 (its
# 200-step warmup, Muon 3e-3), alone on the card: ~660 s of training at 603k tokens/s, so one run over two calls
# through --checkpoint on the warm machine's /tmp. This call trains until --stop-after (given what the test left
# of the call) and saves; s26_callB.sh finishes and evaluates. Make the next call at once (a machine idle 30 s is
# given back, and the checkpoint with it).
# Run from the repository root as .runs/s26_callA.sh, carrying .whl, .corpora/xz and .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
PYTHONPATH=$PWD:/tmp/site timeout 170 python3 -m pytest -q -m gpu tests/test_quality_bench.py -p no:cacheprovider \
    2>&1 | tail -n 15
mkdir -p /tmp/ckpt && rm -f /tmp/ckpt/q400m_xl1024_b32_s0.pt
X="--preset long-documents --xl-match-params --batch 32 --seq 1024 --seg 1024 --mem 1024 --optimizer muon"
X="$X --muon-lr 3e-3 --seed 0"
echo "XL from ${SECONDS} s into the call"
OUT=$OUT/q400m_xl1024_b32_s0_c1 PACK=1 RUN_TIMEOUT=$((585 - SECONDS)) EVAL_MARGIN=40 GPUS=0 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 400e6 \
            --checkpoint /tmp/ckpt/q400m_xl1024_b32_s0.pt" \
    RUNS="xl:$X" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 3
ls -la /tmp/ckpt
