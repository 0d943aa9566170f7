#!/usr/bin/env bash
# Prepared in session 28 (issue 15, goal 2), to run once seed 1 confirms logit_softcap=15 (s29_callA.sh): as
# s28_callA.sh, torch.compile's caches of ours (the preset with the cap, 16 x 2048) and of the XL 1024 + 1024 like
# for like on 32 x 1024, each made by a 1-second run, one after the other (about 300 s); they come back as
# $OUT/cache/caches.tar.xz.NN. Then, here:
#   mkdir -p .compile_cache && rm -f .compile_cache/* && cp FILES_AT/cache/caches.tar.xz.* .compile_cache/
# and at once (an idle machine is given back after 30 s) run s29_callC.sh carrying .whl, .corpora/xz, .runs and
# .compile_cache. Run from the repository root as .runs/s29_callB.sh, carrying .whl, .corpora/xz and .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
C=/tmp/compile_cache
mkdir -p $C $OUT/cache
P="--preset long-documents --set logit_softcap=15 --batch 16 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --muon-split-qkv"
X="--preset long-documents --xl-match-params --batch 32 --seq 1024 --seg 1024 --mem 1024 --optimizer muon --muon-lr 3e-3"
export COMMON="--corpus linux_c --eval-bytes 1e5 --log-every 200 --seconds 1" PACK=1 EVAL_MARGIN=30
OUT=$OUT/c_ours RUN_TIMEOUT=300 GPUS=0 RUNS="ours:$P --seed 0 --compile-cache $C/ours.bin" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 3
OUT=$OUT/c_xl RUN_TIMEOUT=200 GPUS=0 RUNS="xl:$X --seed 0 --compile-cache $C/xl.bin" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 3
grep -ho '"warmup_s": [0-9.]*\|"compile_cache": "[a-z ]*"' $OUT/c_*/quality_all.jsonl
ls -la $C
tar -C $C -cf - ours.bin xl.bin | xz -T0 -6 | split -b 15M -d - $OUT/cache/caches.tar.xz.
ls -la $OUT/cache
parts=$(ls $OUT/cache | wc -l)
[ "$parts" -le 4 ] || { echo "FAILED: $parts parts, more than the 4 files a call can still return" >&2; exit 1; }
