#!/usr/bin/env bash
# Prepared in session 33 (issue 15), after s34_callA.sh (same machine, or carrying its caches): 100M-token runs on the
# preset's 32 x 2048 with wsd, compiled from s34_callA.sh's cache of the graphs with embedding_mixing and
# attention_gate (ours32_emg.bin; VARIANT=em: embedding_mixing alone, ours32_em.bin), about 140 s each end to end,
# one after the other, each alone on the card.
# RUNLIST: runs separated by ';', each "NAME|FLAGS" (the seed in FLAGS). Default:
#   emg_scalarlr1e2_b32_s0|--seed 0 --scalar-lr 1e-2: goal 1 with both options, paired with the thirty-third
#     session's preset run of the same rows, compiled too:
#     bench/results/2026-12-03_h200_d8d9b0e/q100m_c_preset_wsd_b32_s0_all.jsonl:quality_0_ours (0.7696);
#   emg_b32_s0|--seed 0: the same without the mixing weights' own rate.
# Run from the repository root as .runs/s34_callC.sh, carrying .whl, .corpora/xz and .runs (and .compile_cache where
# the machine is a fresh one).
set -u
VARIANT=${VARIANT:-emg}
RUNLIST=${RUNLIST:-"${VARIANT}_scalarlr1e2_b32_s0|--seed 0 --scalar-lr 1e-2;${VARIANT}_b32_s0|--seed 0"}
case $VARIANT in
    emg) OPTIONS="--set embedding_mixing=true --set attention_gate=true" ;;
    em) OPTIONS="--set embedding_mixing=true" ;;
    *) echo "FAILED: VARIANT must be emg or em, got $VARIANT" >&2; exit 2 ;;
esac
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
C=/tmp/compile_cache_s34
if [ -s $C/ours32_$VARIANT.bin ]; then
    echo "cache: kept on this machine"
else
    rm -rf $C && mkdir -p $C
    cat .compile_cache/caches34.tar.xz.* | xz -dc | tar -C $C -xf - || { echo "FAILED: the carried caches do not unpack" >&2; exit 1; }
    echo "cache: carried"
fi
[ -s $C/ours32_$VARIANT.bin ] || { echo "FAILED: no cache of the 32-row graphs (ours32_$VARIANT.bin)" >&2; exit 1; }
P="--preset long-documents --batch 32 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --muon-split-qkv"
P="$P --schedule wsd --decay-frac 0.4 $OPTIONS"
P="$P --compile-cache $C/ours32_$VARIANT.bin"
export COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" PACK=1 EVAL_MARGIN=30
IFS=';' read -ra runs <<< "$RUNLIST"
for run in "${runs[@]}"; do
    IFS='|' read -r name flags <<< "$run"
    OUT=$OUT/q100m_c_$name RUN_TIMEOUT=225 GPUS=0 RUNS="ours:$P $flags" \
        bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 1
    echo "$name: $(grep -h '"kind": "result"' $OUT/q100m_c_$name/quality_all.jsonl | grep -o '"compile_cache_graphs": {[^}]*}\|"cut": [a-z]*\|"warmup_s": [0-9.]*\|"train_s": [0-9.]*' | tr '\n' ' ') at ${SECONDS} s"
done
