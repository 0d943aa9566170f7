#!/usr/bin/env bash
# Prepared in session 33 (issue 15, goal 2 at seed $SEED: 0 unless given): 180 s of training each, compilation
# excluded, one after the other, each alone on the card, compiled from s34_callA.sh's caches (/tmp/compile_cache_s34
# where the machine is the same, else the carried .compile_cache/caches34.tar.xz.*):
#   the XL 1024 + 1024 like for like on 32 x 1024 (6 untimed steps) with the cosine, its better schedule (with wsd
#   0.4 it scored 0.0034 worse at 180 s: thirty-third session);
#   the preset (qk-rmsnorm in every layer, wsd 0.4) on 32 x 2048 with embedding_mixing and attention_gate
#   (VARIANT=emg, the default; VARIANT=em: embedding_mixing alone, should call A's screen of the gate lose), and
#   OURS_FLAGS (default "--scalar-lr 1e-2": embedding mixing was measured with it; pass OURS_FLAGS= for none; the
#   rate reaches the mixing weights alone, not the gates, which train at --lr with the other AdamW parameters).
# --xl-match-params matches the XL to the preset without the two options (19,927,524 parameters, as in the thirty-second
# and thirty-third sessions, so that xl.bin serves it): ours has 25,779 more (19,953,303: 0.13%).
# In the thirty-third session the preset without the two options led the XL (on wsd) by 0.0762 at seed 0 (0.7040
# against 0.7802), and the XL's cosine run of the thirty-second session by 0.0728. Goal 2 asks 0.10.
# About 500 s. Run from the repository root as .runs/s34_callB.sh, carrying .whl, .corpora/xz, .runs and .compile_cache.
set -u
SEED=${SEED:-0}
VARIANT=${VARIANT:-emg}
case $VARIANT in
    emg) OPTIONS="--set embedding_mixing=true --set attention_gate=true" ;;
    em) OPTIONS="--set embedding_mixing=true" ;;
    *) echo "FAILED: VARIANT must be emg or em, got $VARIANT" >&2; exit 2 ;;
esac
OURS_FLAGS=${OURS_FLAGS-"--scalar-lr 1e-2"}
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
C=/tmp/compile_cache_s34
if [ -s $C/ours32_$VARIANT.bin ] && [ -s $C/xl.bin ]; then
    echo "caches: kept on this machine"
else
    rm -rf $C && mkdir -p $C
    cat .compile_cache/caches34.tar.xz.* | xz -dc | tar -C $C -xf - || { echo "FAILED: the carried caches do not unpack" >&2; exit 1; }
    echo "caches: carried"
fi
[ -s $C/ours32_$VARIANT.bin ] && [ -s $C/xl.bin ] || { echo "FAILED: the caches are not both there" >&2; exit 1; }
W="--schedule wsd --decay-frac 0.4"
P="--preset long-documents --batch 32 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --muon-split-qkv $W"
P="$P $OPTIONS $OURS_FLAGS"
X="--preset long-documents --xl-match-params --batch 32 --seq 1024 --seg 1024 --mem 1024 --optimizer muon --muon-lr 3e-3"
export COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --seconds 180" PACK=1 EVAL_MARGIN=30
OUT=$OUT/t180_xl1024_b32_muon_s$SEED RUN_TIMEOUT=270 GPUS=0 RUNS="xl:$X --seed $SEED --untimed-steps 6 --compile-cache $C/xl.bin" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 2
OUT=$OUT/t180_${VARIANT}_b32_s$SEED RUN_TIMEOUT=320 GPUS=0 RUNS="ours:$P --seed $SEED --compile-cache $C/ours32_$VARIANT.bin" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 2
# each run's cache must have served every graph ("miss": 0), or its clock was not like for like
for f in $OUT/t180_*/quality_all.jsonl; do
    echo "$f: $(grep -h '"kind": "result"' $f | grep -o '"compile_cache_graphs": {[^}]*}\|"tokens_per_s": [0-9.]*\|"cut": [a-z]*' | tr '\n' ' ')"
done
echo "elapsed $SECONDS s"
