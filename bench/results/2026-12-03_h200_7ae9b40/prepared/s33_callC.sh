#!/usr/bin/env bash
# Prepared in session 32 (issue 15), after s33_callB.sh: goal 2 with the preset on 16 rows instead of 32, seed 0, wsd,
# against call B's XL (another call). With qk-rmsnorm in every layer 16 rows scored 0.013-0.018 better than 32 at 100M
# tokens (thirty-second session), while 32 train about 11% more tokens a second: it decides the preset's rows.
# First the compile cache of the 16-row graphs (a 1-second run alone on the card, its record dropped; about 200-250 s),
# then 180 s of training alone on the card, compiled from that cache, so that no graph compiles inside its clock.
# About 480-550 s. Run from the repository root as .runs/s33_callC.sh, carrying .whl, .corpora/xz and .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
C=/tmp/compile_cache_s33
mkdir -p $C
P="--preset long-documents --batch 16 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --muon-split-qkv"
P="$P --schedule wsd --decay-frac 0.4 --seed 0 --compile-cache $C/ours16.bin"
PACK=1 EVAL_MARGIN=30 OUT=$OUT/c_ours16 RUN_TIMEOUT=330 GPUS=0 RUNS="ours:$P" \
    COMMON="--corpus linux_c --eval-bytes 1e5 --log-every 200 --seconds 1" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 1
grep -ho '"warmup_s": [0-9.]*\|"compile_cache": "[a-z ]*"' $OUT/c_ours16/quality_all.jsonl
rm -rf $OUT/c_ours16
echo "cache done at ${SECONDS} s"
PACK=1 EVAL_MARGIN=30 OUT=$OUT/t180_preset_wsd_b16_s0 RUN_TIMEOUT=310 GPUS=0 RUNS="ours:$P" \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --seconds 180" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 2
echo "$(grep -h '"kind": "result"' $OUT/t180_*/quality_all.jsonl | grep -o '"compile_cache_graphs": {[^}]*}\|"tokens_per_s": [0-9.]*\|"cut": [a-z]*' | tr '\n' ' ')"
echo "elapsed $SECONDS s"
