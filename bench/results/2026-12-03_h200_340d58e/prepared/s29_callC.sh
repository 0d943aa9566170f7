#!/usr/bin/env bash
# Prepared in session 28 (issue 15, goal 2), at once after s29_callB.sh: as s28_callB.sh (180 s of training each,
# compilation excluded, one after the other, each alone on the card, compiled from the carried caches): the XL
# 1024 + 1024 like for like on 32 x 1024 (6 untimed steps), then the preset with logit_softcap=15, seed 0. In session
# 28 the preset without the cap led the XL by 0.0509 (0.7271 against 0.7780). About 480 s.
# Run from the repository root as .runs/s29_callC.sh, carrying .whl, .corpora/xz, .runs and .compile_cache.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
C=/tmp/compile_cache
mkdir -p $C
cat .compile_cache/caches.tar.xz.* | xz -dc | tar -C $C -xf - || { echo "FAILED: the carried caches do not unpack" >&2; exit 1; }
ls -la $C
P="--preset long-documents --set logit_softcap=15 --batch 16 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --muon-split-qkv"
X="--preset long-documents --xl-match-params --batch 32 --seq 1024 --seg 1024 --mem 1024 --optimizer muon --muon-lr 3e-3"
export COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --seconds 180" PACK=1 EVAL_MARGIN=30
OUT=$OUT/t180_xl1024_b32_muon_s0 RUN_TIMEOUT=275 GPUS=0 RUNS="xl:$X --seed 0 --untimed-steps 6 --compile-cache $C/xl.bin" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 2
OUT=$OUT/t180_ours_softcap15_s0 RUN_TIMEOUT=300 GPUS=0 RUNS="ours:$P --seed 0 --compile-cache $C/ours.bin" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 2
