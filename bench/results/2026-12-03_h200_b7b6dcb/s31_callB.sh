#!/usr/bin/env bash
# Prepared in session 30 (issue 15, goal 2), at once after s31_callA.sh: 180 s of training each, compilation
# excluded, one after the other, each alone on the card, compiled from call A's caches (/tmp/compile_cache_s31 where
# the machine is the same, else the carried .compile_cache/caches32.tar.xz.*): the XL 1024 + 1024 like for like on
# 32 x 1024 (6 untimed steps), then the preset on 32 x 2048 instead of 16 x 2048, seed 0 (at equal tokens 32 rows
# scored as 16, +0.0004, twenty-third session; at equal time they take half the optimizer steps a token: Muon's
# 4.1 ms a step). On 16 x 2048 the preset led the XL by 0.0556 at seed 0 (session 30, call 2).
# Run from the repository root as .runs/s31_callB.sh, carrying .whl, .corpora/xz, .runs and .compile_cache.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
C=/tmp/compile_cache_s31
if [ -s $C/ours.bin ] && [ -s $C/xl.bin ]; then
    echo "caches: kept on this machine"
else
    rm -rf $C && mkdir -p $C
    cat .compile_cache/caches32.tar.xz.* | xz -dc | tar -C $C -xf - || { echo "FAILED: the carried caches do not unpack" >&2; exit 1; }
    echo "caches: carried"
fi
P="--preset long-documents --batch 32 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --muon-split-qkv"
X="--preset long-documents --xl-match-params --batch 32 --seq 1024 --seg 1024 --mem 1024 --optimizer muon --muon-lr 3e-3"
export COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --seconds 180" PACK=1 EVAL_MARGIN=30
OUT=$OUT/t180_xl1024_b32_muon_s0 RUN_TIMEOUT=270 GPUS=0 RUNS="xl:$X --seed 0 --untimed-steps 6 --compile-cache $C/xl.bin" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 2
OUT=$OUT/t180_ours_b32_s0 RUN_TIMEOUT=320 GPUS=0 RUNS="ours:$P --seed 0 --compile-cache $C/ours.bin" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 2
# each run's cache must have served every graph ("miss": 0), or its clock was not like for like
grep -ho '"compile_cache_graphs": {[^}]*}' $OUT/t180_*/quality_all.jsonl
echo "elapsed $SECONDS s"
# GPU tests of session 30's changes not yet run on a card (the one-query route; the variable-length path)
mkdir -p $OUT/tests
PYTHONPATH=$PWD:/tmp/site timeout 110 python3 -m pytest -p no:cacheprovider -m gpu -rA tests/test_gpu.py \
    -k "one_query or memory_rows or resets_train or reading_documents" > $OUT/tests/gpu_tests_callB.txt 2>&1
grep -E "passed|failed|PASSED|FAILED|Error" $OUT/tests/gpu_tests_callB.txt | tail -n 12
echo "elapsed $SECONDS s"
