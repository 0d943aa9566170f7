#!/usr/bin/env bash
# Session 30, call 1 (issue 15, goal 2: the attention of a block after rows start a new document).
# 1. bench/attention_kernels.py alone on the card: the library's MemoryRows path, now one variable-length flash call,
#    against the two flash calls it replaced; cuDNN's kernel called directly (its causal alignment, padded, split).
# 2. Side by side: the GPU tests of the changed paths (MemoryRows, the band, documents with resets, the CUDA-graph
#    TrainStep reading documents, and session 29's two cases of logit_softcap, not run since their fix), and
#    torch.compile's caches of the preset (16 x 2048) and of the XL 1024 + 1024 (32 x 1024) for call 2 (kept in
#    /tmp/compile_cache_s30 for a call on the same machine, and returned in $OUT/cache).
# 3. If time is left: the kernel profile of the preset's step reading documents (16 x 2048).
# Run from the repository root as .runs/s30_call1.sh, carrying .whl, .corpora/xz and .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
mkdir -p $OUT/tests $OUT/cache /tmp/site
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
PYTHONPATH=$PWD:/tmp/site timeout 150 python3 bench/attention_kernels.py > $OUT/attention_kernels.jsonl 2>&1
cat $OUT/attention_kernels.jsonl | cut -c1-230
echo "elapsed $SECONDS s"
PYTHONPATH=$PWD:/tmp/site timeout 400 python3 -m pytest -p no:cacheprovider -m gpu -rA tests/test_gpu.py \
    -k "memory_rows or band or resets_train or reading_documents or False-True-True-False-True" \
    > $OUT/tests/gpu_tests.txt 2>&1 &
C=/tmp/compile_cache_s30
rm -rf $C && mkdir -p $C
P="--preset long-documents --batch 16 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --muon-split-qkv"
X="--preset long-documents --xl-match-params --batch 32 --seq 1024 --seg 1024 --mem 1024 --optimizer muon --muon-lr 3e-3"
export COMMON="--corpus linux_c --eval-bytes 1e5 --log-every 200 --seconds 1" PACK=1 EVAL_MARGIN=30
(OUT=$OUT/c_ours RUN_TIMEOUT=330 GPUS=0 RUNS="ours:$P --seed 0 --compile-cache $C/ours.bin" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 3) &
OUT=$OUT/c_xl RUN_TIMEOUT=250 GPUS=0 RUNS="xl:$X --seed 0 --compile-cache $C/xl.bin" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 3
wait
echo "elapsed $SECONDS s"
grep -ho '"warmup_s": [0-9.]*\|"compile_cache": "[a-z ]*"\|"tokens_per_s": [0-9.]*' $OUT/c_*/quality_all.jsonl
rm -rf $OUT/c_ours $OUT/c_xl
tar -C $C -cf - ours.bin xl.bin | xz -T8 -6 | split -b 15M -d - $OUT/cache/caches16.tar.xz.
ls -la $C $OUT/cache
grep -E "passed|failed|PASSED|FAILED|Error" $OUT/tests/gpu_tests.txt | tail -n 30
LEFT=$((560 - SECONDS))
if [ $LEFT -gt 120 ]; then
    PYTHONPATH=$PWD:/tmp/site timeout $LEFT python3 bench/profile_step.py --cfg long-documents --shape 16x2048 \
        --documents --steps 20 --profile-steps 10 > $OUT/profile_16x2048.txt 2>&1
    tail -n 35 $OUT/profile_16x2048.txt | head -n 12
fi
echo "elapsed $SECONDS s"
