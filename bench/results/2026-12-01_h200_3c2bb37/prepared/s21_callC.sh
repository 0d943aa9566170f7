#!/usr/bin/env bash
# Prepared in session 20 for the next (issue 15, goal 2 on a machine of one GPU, the only kind lent in sessions
# 18-20): torch.compile's caches of ours (the preset, 16 x 2048) and of the XL 1024 + 1024 like for like, each made
# by a 1-second run (bench/quality.py --compile-cache: written once the untimed steps have compiled everything), one
# after the other. About 250 s. Both caches come back in one tar.xz cut in 15 MiB parts, $OUT/cache/caches.tar.xz.NN
# (a device call returns at most 8 files of at most 16 MiB; the runs' 4 files leave 4 for the parts). Then, here:
#   mkdir -p .compile_cache && cp FILES_AT/cache/caches.tar.xz.* .compile_cache/ && echo .compile_cache/ >> .git/info/exclude
# and run s21_callG1.sh carrying .whl, .corpora/xz and .compile_cache.
# Run from the repository root, carrying .whl and .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
C=/tmp/compile_cache
mkdir -p $C $OUT/cache
P="--preset long-documents --batch 16 --seq 2048 --warmup 50"
X="--preset long-documents --xl-match-params --batch 16 --seq 1024 --seg 1024 --mem 1024"
export COMMON="--corpus linux_c --eval-bytes 1e5 --log-every 200 --seconds 1" PACK=1 EVAL_MARGIN=30
OUT=$OUT/c_ours RUN_TIMEOUT=300 GPUS=0 RUNS="ours:$P --seed 1 --compile-cache $C/ours.bin" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 3
OUT=$OUT/c_xl RUN_TIMEOUT=200 GPUS=0 RUNS="xl:$X --seed 1 --compile-cache $C/xl.bin" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 3
grep -ho '"warmup_s": [0-9.]*\|"compile_cache": "[a-z ]*"' $OUT/c_*/quality_all.jsonl
ls -la $C
tar -C $C -cf - ours.bin xl.bin | xz -T0 -6 | split -b 15M -d - $OUT/cache/caches.tar.xz.
ls -la $OUT/cache
parts=$(ls $OUT/cache | wc -l)
[ "$parts" -le 4 ] || { echo "FAILED: $parts parts, more than the 4 files a call can still return" >&2; exit 1; }
