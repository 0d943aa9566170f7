#!/usr/bin/env bash
# Prepared in session 33 (issue 15). Side by side on one H200 (the layout of s33_callA.sh, which fitted in 526 s):
# 1. Two screens at 100M tokens, uncompiled, 16 x 2048 (s27_pair.sh's rows), one after the other (the first beside
#    the compilations of 2), seed 0, on the preset as it now is (qk-rmsnorm in every layer, --schedule wsd
#    --decay-frac 0.4), each paired (same data, same initial draw: neither option draws at random) with the
#    thirty-first session's run of that model,
#    bench/results/2026-12-03_h200_b7b6dcb/q100m_qknorm_all_wsd40_s0_all.jsonl:quality_0_ours (0.7590):
#      --set attention_gate=true: each head's attention output times 2 * sigmoid(w . x) (new; Qiu et al. 2025);
#      --set embedding_mixing=true: the block's embeddings mixed into every later layer's input, without --scalar-lr
#      (with --scalar-lr 1e-2 it scored 0.0056 better, and --scalar-lr 1e-2 alone +0.0004: thirty-third session).
# 2. torch.compile's caches of the preset on 32 x 2048 with both options (ours32_emg.bin) and with embedding_mixing
#    alone (ours32_em.bin, for s34_callB.sh's VARIANT=em should the gate's screen lose; the schedule and --scalar-lr
#    are not in the graphs), compiled side by side, and of the XL 1024 + 1024 on 32 x 1024 (xl.bin), for
#    s34_callB.sh and s34_callC.sh (kept in /tmp/compile_cache_s34 and returned in $OUT/cache).
# About 530 s (the two 32-row compilations side by side: if they take past 400 s, a cache is missing and its
# record says so). Run from the repository root as .runs/s34_callA.sh, carrying .whl, .corpora/xz and .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
mkdir -p $OUT/cache /tmp/site
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
W="--schedule wsd --decay-frac 0.4"
# 1 (s27_pair.sh kills every process on the card as it starts: the others start after it)
RUN_TIMEOUT=295 RUNLIST="gate_s0|ours|--seed 0 $W --set attention_gate=true;embmix_s0|ours|--seed 0 $W --set embedding_mixing=true" \
    bash bench/results/2026-12-03_h200_d394d9a/s27_pair.sh > $OUT/pair_stdout.txt 2>&1 &
pair=$!
sleep 20
# 2
C=/tmp/compile_cache_s34
rm -rf $C && mkdir -p $C
P="--preset long-documents --batch 32 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --muon-split-qkv $W"
X="--preset long-documents --xl-match-params --batch 32 --seq 1024 --seg 1024 --mem 1024 --optimizer muon --muon-lr 3e-3"
export COMMON="--corpus linux_c --eval-bytes 1e5 --log-every 200 --seconds 1" PACK=1 EVAL_MARGIN=30
(OUT=$OUT/c_emg RUN_TIMEOUT=400 GPUS=0 \
    RUNS="ours:$P --set embedding_mixing=true --set attention_gate=true --seed 0 --compile-cache $C/ours32_emg.bin" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 1) &
emg=$!
sleep 5
(OUT=$OUT/c_em RUN_TIMEOUT=400 GPUS=0 RUNS="ours:$P --set embedding_mixing=true --seed 0 --compile-cache $C/ours32_em.bin" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 1) &
em=$!
OUT=$OUT/c_xl RUN_TIMEOUT=250 GPUS=0 RUNS="xl:$X --seed 0 --compile-cache $C/xl.bin" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 1
wait $emg $em
grep -o '"warmup_s": [0-9.]*\|"compile_cache": "[a-z ]*"' $OUT/c_*/quality_all.jsonl
rm -rf $OUT/c_emg $OUT/c_em $OUT/c_xl
tar -C $C -cf - ours32_emg.bin ours32_em.bin xl.bin | xz -T8 -6 | split -b 15M -d - $OUT/cache/caches34.tar.xz.
ls -la $C $OUT/cache
echo "caches done at ${SECONDS} s"
wait $pair
cat $OUT/pair_stdout.txt
