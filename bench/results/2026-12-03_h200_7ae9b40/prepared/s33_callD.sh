#!/usr/bin/env bash
# Prepared in session 32 (issue 15), if device time is left after s33_callA-C (or in place of C): 100M-token runs on
# the preset's 32 x 2048, compiled from s33_callA.sh's cache of those graphs (/tmp/compile_cache_s33/ours32.bin where
# the machine is the same, else the carried .compile_cache/caches33.tar.xz.*; the optimizer and the schedule are not in
# the graphs), about 90 s of training each instead of 211 s uncompiled, one after the other, each alone on the card.
# RUNLIST: runs separated by ';', each "NAME|FLAGS" (the seed in FLAGS). Default:
#   preset_wsd_b32_s0|--seed 0: the preset as it now is at 100M tokens (goal 1; on 32 rows with the cosine,
#     uncompiled, it scored 0.7829: bench/results/2026-12-03_h200_7ae9b40/q100m_preset_b32_s0) and the baseline of
#     the pairs below (compiled like them: the same rounding);
#   muonlr42_wsd_b32_s0|--seed 0 --muon-lr 4.2e-3: Muon at sqrt(2) times the rate for half the steps of 16 rows (3e-3
#     was chosen on 16 rows; 32 rows scored 0.013-0.018 worse per token than 16 on today's preset);
#   scalarlr1e2_wsd_b32_s0|--seed 0 --scalar-lr 1e-2: the mixing weights' own rate (s33_callA.sh screens it on 16
#     rows).
# About 180 s a run (three fit in a call). Run from the repository root as .runs/s33_callD.sh, carrying .whl, .corpora/xz and .runs (and
# .compile_cache where the machine is a fresh one).
set -u
RUNLIST=${RUNLIST:-"preset_wsd_b32_s0|--seed 0;muonlr42_wsd_b32_s0|--seed 0 --muon-lr 4.2e-3;scalarlr1e2_wsd_b32_s0|--seed 0 --scalar-lr 1e-2"}
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
C=/tmp/compile_cache_s33
if [ -s $C/ours32.bin ]; then
    echo "cache: kept on this machine"
else
    rm -rf $C && mkdir -p $C
    cat .compile_cache/caches33.tar.xz.* | xz -dc | tar -C $C -xf - || { echo "FAILED: the carried caches do not unpack" >&2; exit 1; }
    echo "cache: carried"
fi
[ -s $C/ours32.bin ] || { echo "FAILED: no cache of the 32-row graphs (ours32.bin)" >&2; exit 1; }
P="--preset long-documents --batch 32 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --muon-split-qkv"
P="$P --schedule wsd --decay-frac 0.4 --compile-cache $C/ours32.bin"
export COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" PACK=1 EVAL_MARGIN=30
IFS=';' read -ra runs <<< "$RUNLIST"
for run in "${runs[@]}"; do
    IFS='|' read -r name flags <<< "$run"
    OUT=$OUT/q100m_c_$name RUN_TIMEOUT=225 GPUS=0 RUNS="ours:$P $flags" \
        bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 1
    echo "$name: $(grep -h '"kind": "result"' $OUT/q100m_c_$name/quality_all.jsonl | grep -o '"compile_cache_graphs": {[^}]*}\|"cut": [a-z]*\|"warmup_s": [0-9.]*\|"train_s": [0-9.]*' | tr '\n' ' ') at ${SECONDS} s"
done
