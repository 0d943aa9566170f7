#!/usr/bin/env bash
# Prepared in session 30 (issue 15). Side by side on one H200:
# 1. Two changes to the preset at 100M tokens, seed 0, uncompiled, one after the other (s27_pair.sh), each paired
#    (same data, same initial draw: neither option draws anything) with the twenty-eighth session's preset run with
#    the cap, bench/results/2026-12-03_h200_340d58e/q100m_softcap15_s0_all.jsonl:quality_0_ours (0.7830):
#    zero_init_output_projections=true (every layer's attention and feed-forward output projections start at zero,
#    modded-nanogpt's; new in session 30, CPU-tested only) and all_layers_qk_rmsnorm=true (qk-rmsnorm in every layer,
#    not only the recurrent one; a cut screen at seed 2 in the sixteenth session: +0.004).
#    The blocks after a document start now run one variable-length flash call (session 30): the same function, other
#    bf16 rounding than the baseline run's two calls.
# 2. torch.compile's caches of the preset on 32 x 2048 and of the XL 1024 + 1024 on 32 x 1024, for s31_callB.sh at
#    once after this call (kept in /tmp/compile_cache_s31 and returned in $OUT/cache).
# Run from the repository root as .runs/s31_callA.sh, carrying .whl, .corpora/xz and .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
mkdir -p $OUT/cache /tmp/site
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
# 1 (s27_pair.sh kills every process on the card as it starts: the others start after it)
RUN_TIMEOUT=282 RUNLIST="zero_out_s0|ours|--seed 0 --set zero_init_output_projections=true;qknorm_all_s0|ours|--seed 0 --set all_layers_qk_rmsnorm=true" \
    bash bench/results/2026-12-03_h200_d394d9a/s27_pair.sh > $OUT/pair_stdout.txt 2>&1 &
pair=$!
sleep 20
# 2
C=/tmp/compile_cache_s31
rm -rf $C && mkdir -p $C
P="--preset long-documents --batch 32 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --muon-split-qkv"
X="--preset long-documents --xl-match-params --batch 32 --seq 1024 --seg 1024 --mem 1024 --optimizer muon --muon-lr 3e-3"
export COMMON="--corpus linux_c --eval-bytes 1e5 --log-every 200 --seconds 1" PACK=1 EVAL_MARGIN=30
(OUT=$OUT/c_ours RUN_TIMEOUT=330 GPUS=0 RUNS="ours:$P --seed 0 --compile-cache $C/ours.bin" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 1) &
ours=$!
OUT=$OUT/c_xl RUN_TIMEOUT=250 GPUS=0 RUNS="xl:$X --seed 0 --compile-cache $C/xl.bin" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 1
wait $ours
grep -ho '"warmup_s": [0-9.]*\|"compile_cache": "[a-z ]*"' $OUT/c_*/quality_all.jsonl
rm -rf $OUT/c_ours $OUT/c_xl
# named for the shape (32 rows), so that a 16-row call cannot unpack them
tar -C $C -cf - ours.bin xl.bin | xz -T8 -6 | split -b 15M -d - $OUT/cache/caches32.tar.xz.
ls -la $C $OUT/cache
echo "caches done at ${SECONDS} s"
wait $pair
cat $OUT/pair_stdout.txt
