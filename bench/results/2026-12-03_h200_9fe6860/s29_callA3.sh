#!/usr/bin/env bash
# Session 29, call A (issue 15). Three things side by side on one H200, to save device time:
# 1. s29_callA.sh's equal-token runs, one after the other (100M tokens, uncompiled): logit_softcap=15 at seed 1
#    (paired with bench/results/2026-12-03_h200_d394d9a/q100m_vrunet_s1_all.jsonl:quality_0_ours, 0.7906) and
#    logit_softcap=30 at seed 0 (paired with q100m_vrunet_s0, 0.7886). Their figures do not depend on speed.
# 2. The GPU test cases of logit_softcap (graph-replayed decoding with the cap at 2, compiled; the compiled CUDA-graph
#    TrainStep with it at 15), not yet run on a GPU.
# 3. s29_callB.sh's torch.compile caches (the preset with the cap at 15; the XL 1024 + 1024), for goal 2's
#    equal-time runs (s29_callC.sh) at once after this call; mostly CPU work. Their 1-second runs' records are
#    dropped (a call returns 8 files): their warm-up times and cache status are printed instead.
# Run from the repository root as .runs/s29_callA3.sh, carrying .whl, .corpora/xz and .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
mkdir -p $OUT/tests /tmp/site
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
# 1 (s27_pair.sh kills every process on the card as it starts: the others start after it)
RUN_TIMEOUT=282 RUNLIST="softcap15_s1|ours|--seed 1 --set logit_softcap=15;softcap30_s0|ours|--seed 0 --set logit_softcap=30" \
    bash .runs/s27_pair.sh > $OUT/pair_stdout.txt 2>&1 &
pair=$!
sleep 20
# 2
PYTHONPATH=$PWD:/tmp/site timeout 400 python3 -m pytest -p no:cacheprovider -m gpu -rA tests/test_gpu.py \
    -k "True-True-False-1-True or False-True-True-False-True" > $OUT/tests/gpu_softcap_tests.txt 2>&1 &
# 3
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
rm -rf $OUT/c_ours $OUT/c_xl
ls -la $C
tar -C $C -cf - ours.bin xl.bin | xz -T4 -6 | split -b 15M -d - $OUT/cache/caches.tar.xz.
ls -la $OUT/cache
echo "caches done at ${SECONDS} s"
wait
cat $OUT/pair_stdout.txt
tail -n 5 $OUT/tests/gpu_softcap_tests.txt
