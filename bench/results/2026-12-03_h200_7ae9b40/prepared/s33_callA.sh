#!/usr/bin/env bash
# Prepared in session 32 (issue 15). Side by side on one H200 (the layout of s32_callA.sh, which fitted in 525 s):
# 1. Two screens at 100M tokens, uncompiled, 16 x 2048 (s27_pair.sh's rows), one after the other (the first beside
#    the compilations of 2), seed 0, on the preset as it now is (qk-rmsnorm in every layer, --schedule wsd
#    --decay-frac 0.4), each paired (same data, same initial draw) with the thirty-first session's run of that model,
#    bench/results/2026-12-03_h200_b7b6dcb/q100m_qknorm_all_wsd40_s0_all.jsonl:quality_0_ours (0.7590):
#      --scalar-lr 1e-2: the value residual's and U-net skips' mixing weights at AdamW 1e-2 instead of 6e-4 (in 1,526
#      steps at 6e-4 they moved from 0.5 and 1 to 0.62-0.82 and 0.69-0.85: thirty-second session's records);
#      --set embedding_mixing=true --scalar-lr 1e-2: the block's token embeddings mixed back into every later layer's
#      input, its weights at the same fast rate.
# 2. torch.compile's caches of the preset on 32 x 2048 (with wsd: the schedule is not in the graph) and of the XL
#    1024 + 1024 on 32 x 1024, for s33_callB.sh (kept in /tmp/compile_cache_s33 and returned in $OUT/cache).
# About 530 s. Run from the repository root as .runs/s33_callA.sh, carrying .whl, .corpora/xz and .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
mkdir -p $OUT/cache /tmp/site
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
W="--schedule wsd --decay-frac 0.4"
# 1 (s27_pair.sh kills every process on the card as it starts: the others start after it)
RUN_TIMEOUT=295 RUNLIST="scalarlr1e2_s0|ours|--seed 0 $W --scalar-lr 1e-2;embmix_scalarlr1e2_s0|ours|--seed 0 $W --scalar-lr 1e-2 --set embedding_mixing=true" \
    bash bench/results/2026-12-03_h200_d394d9a/s27_pair.sh > $OUT/pair_stdout.txt 2>&1 &
pair=$!
sleep 20
# 2
C=/tmp/compile_cache_s33
rm -rf $C && mkdir -p $C
P="--preset long-documents --batch 32 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --muon-split-qkv $W"
X="--preset long-documents --xl-match-params --batch 32 --seq 1024 --seg 1024 --mem 1024 --optimizer muon --muon-lr 3e-3"
export COMMON="--corpus linux_c --eval-bytes 1e5 --log-every 200 --seconds 1" PACK=1 EVAL_MARGIN=30
(OUT=$OUT/c_ours RUN_TIMEOUT=400 GPUS=0 RUNS="ours:$P --seed 0 --compile-cache $C/ours32.bin" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 1) &
ours=$!
OUT=$OUT/c_xl RUN_TIMEOUT=250 GPUS=0 RUNS="xl:$X $W --seed 0 --compile-cache $C/xl.bin" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 1
wait $ours
grep -ho '"warmup_s": [0-9.]*\|"compile_cache": "[a-z ]*"' $OUT/c_*/quality_all.jsonl
rm -rf $OUT/c_ours $OUT/c_xl
tar -C $C -cf - ours32.bin xl.bin | xz -T8 -6 | split -b 15M -d - $OUT/cache/caches33.tar.xz.
ls -la $C $OUT/cache
echo "caches done at ${SECONDS} s"
wait $pair
cat $OUT/pair_stdout.txt
