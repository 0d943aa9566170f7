#!/usr/bin/env bash
# Prepared in session 27 (issue 15, goal 2 with the new preset: value_residual and unet_skips, 0.011-0.014 better at
# 100M tokens; with the former preset ours led the XL 1024 + 1024 by 0.038, twenty-fourth session): 180 s of training
# each, compilation excluded, one after the other on the one GPU (each has the card to itself), compiling from
# s28_callA.sh's caches so that both fit one call: first the XL 1024 + 1024 like for like on 32 x 1024 (warmup 200,
# its 6 untimed steps holding its compilation), then the preset, compiled, seed 0. Each result's compile_cache_graphs
# says how many graphs came from the cache (hit) and how many were compiled (miss). Expect about 230 s + 280 s; a run
# past its stop-after time says cut: true. The XL's run repeats the twenty-fourth session's (0.7765), now beside ours.
# Run from the repository root as .runs/s28_callB.sh, carrying .whl, .corpora/xz, .runs and .compile_cache.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
C=/tmp/compile_cache
mkdir -p $C
cat .compile_cache/caches.tar.xz.* | xz -dc | tar -C $C -xf - || { echo "FAILED: the carried caches do not unpack" >&2; exit 1; }
ls -la $C
P="--preset long-documents --batch 16 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --muon-split-qkv"
X="--preset long-documents --xl-match-params --batch 32 --seq 1024 --seg 1024 --mem 1024 --optimizer muon --muon-lr 3e-3"
export COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --seconds 180" PACK=1 EVAL_MARGIN=30
OUT=$OUT/t180_xl1024_b32_muon_s0 RUN_TIMEOUT=275 GPUS=0 RUNS="xl:$X --seed 0 --untimed-steps 6 --compile-cache $C/xl.bin" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 2
OUT=$OUT/t180_ours_vrunet_s0 RUN_TIMEOUT=300 GPUS=0 RUNS="ours:$P --seed 0 --compile-cache $C/ours.bin" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 2
