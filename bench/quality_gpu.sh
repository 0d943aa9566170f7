#!/usr/bin/env bash
# bench/quality.py runs side by side on one machine: run i on GPU i mod NGPU (3 per GPU on 2 GPUs).
#
#   RUNS="ours:--tokens 100e6 ; ours_nostate:--tokens 100e6 ; xl:--seg 512 --mem 512 --tokens 100e6" \
#       bash bench/quality_gpu.sh
#
# RUNS: runs separated by ';', each MODEL:FLAGS (MODEL = ours | ours_nostate | ours_unread | xl; FLAGS go to
#   bench/quality.py as they are, e.g. --corpus text_docs --seconds 300 --set kv_heads=8).
# COMMON: flags added to every run (e.g. "--corpus linux_c --eval-bytes 2e6").
# OUT: where the JSONL (quality_<i>_<model>.jsonl) and logs go (default bench_out/). With PACK=1 they
#   are packed at the end into quality_all.jsonl (every run's records; each names its run) and
#   quality_logs.txt (the end of every log): a device call returns at most 8 files.
# RUN_TIMEOUT: seconds after which a run is killed (default 540: a 10-minute call with start-up to spare).
#   Each run stops training EVAL_MARGIN seconds before it (default 60) and evaluates what it trained
#   (quality.py --stop-after; its result says cut: true), so a run that would not finish still
#   gives a held-out figure, at fewer tokens.
# NGPU: GPUs to spread over (default: all that nvidia-smi lists).
# GPUS: or the GPU numbers themselves, space-separated (e.g. GPUS=1 keeps every run on GPU 1, so that a
#   second invocation can run on GPU 0 at the same time); run i goes to the (i mod count)th of them.
# SEEDS: seeds, space-separated (e.g. SEEDS="0 1 2"): every run of RUNS once per seed (--seed S added),
#   the runs of one seed after another. A seed decides the initialisation and which documents are read:
#   one seed per configuration is not enough to compare configurations (bench/RESULTS.md).
#
# Carry `.whl` (the wheels below) and the corpora's xz folder, e.g. from /work/main: carry
# [".whl", ".corpora/xz"]. Wheels, downloaded once where there is internet (all pure Python):
#   python3 -m pip download --no-deps -d .whl beartype==0.23.1 x-transformers==2.31.10 einx==0.4.3 \
#       loguru==0.7.3 torch-einops-utils==0.2.0 frozendict==2.5.1
# (einops, numpy, packaging, sympy come with the GPU image's torch; einx imports sympy.)
# Never install the seed package's wheel here: on PYTHONPATH it would shadow this repository's.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench_out}
RUN_TIMEOUT=${RUN_TIMEOUT:-540}
EVAL_MARGIN=${EVAL_MARGIN:-60}
if ! [[ "$RUN_TIMEOUT" =~ ^[0-9]+$ && "$EVAL_MARGIN" =~ ^[0-9]+$ ]] || [ "$RUN_TIMEOUT" -le "$EVAL_MARGIN" ]; then
    echo "RUN_TIMEOUT and EVAL_MARGIN must be whole seconds with RUN_TIMEOUT > EVAL_MARGIN," \
         "got RUN_TIMEOUT=$RUN_TIMEOUT EVAL_MARGIN=$EVAL_MARGIN" >&2
    exit 2
fi
COMMON=${COMMON:-}
mkdir -p "$OUT"
SITE=/tmp/site
if ls .whl/*.whl >/dev/null 2>&1; then
    wheels=$(ls .whl/*.whl | grep -Ei '/(beartype|x_transformers|einx|loguru|torch_einops_utils|frozendict)-' || true)
    [ -n "$wheels" ] && python3 -m pip install -q --no-index --no-deps --target "$SITE" $wheels
fi
export PYTHONPATH=$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}
NGPU=${NGPU:-$(nvidia-smi -L 2>/dev/null | wc -l)}
[ "$NGPU" -ge 1 ] || NGPU=1
read -ra gpus <<< "${GPUS:-$(seq -s ' ' 0 $((NGPU - 1)))}"
for g in "${gpus[@]}"; do
    if ! [[ "$g" =~ ^[0-9]+$ ]]; then
        echo "GPUS must be GPU numbers separated by spaces, got GPUS='${GPUS:-}'" >&2
        exit 2
    fi
done
[ "${#gpus[@]}" -ge 1 ] || { echo "GPUS names no GPU" >&2; exit 2; }
: "${RUNS:?set RUNS, e.g. RUNS=\"ours:--tokens 100e6 ; xl:--seg 512 --mem 512 --tokens 100e6\"}"

IFS=';' read -ra given <<< "$RUNS"
read -ra seeds <<< "${SEEDS:-}"
specs=()
for seed in "${seeds[@]}"; do
    if ! [[ "$seed" =~ ^[0-9]+$ ]]; then
        echo "SEEDS must be whole numbers separated by spaces, got SEEDS='${SEEDS:-}'" >&2
        exit 2
    fi
done
if [ "${#seeds[@]}" -eq 0 ]; then
    specs=("${given[@]}")
else
    for seed in "${seeds[@]}"; do
        for spec in "${given[@]}"; do
            [ -z "$(echo "$spec" | tr -d ' ')" ] && continue
            [[ "$spec" == *:* ]] || spec="$spec:"  # MODEL alone: no flags but the seed
            specs+=("$spec --seed $seed")
        done
    done
fi
pids=()
i=0
for spec in "${specs[@]}"; do
    spec=$(echo "$spec" | sed 's/^ *//; s/ *$//')
    [ -z "$spec" ] && continue
    model=${spec%%:*}
    flags=${spec#*:}
    [ "$flags" = "$spec" ] && flags=""
    gpu=${gpus[$((i % ${#gpus[@]}))]}
    name="quality_${i}_${model}"
    echo "run $i on GPU $gpu: $model $COMMON $flags"
    # shellcheck disable=SC2086  # the flags are meant to split into words
    CUDA_VISIBLE_DEVICES=$gpu timeout -k 10 "$RUN_TIMEOUT" python3 bench/quality.py --model "$model" \
        --impl "$name" --stop-after $((RUN_TIMEOUT - EVAL_MARGIN)) $COMMON $flags --out "$OUT/$name.jsonl" \
        > "$OUT/$name.log" 2>&1 &
    pids+=($!)
    i=$((i + 1))
done
status=0
for j in "${!pids[@]}"; do
    if ! wait "${pids[$j]}"; then
        status=1
        echo "=== run $j failed or timed out; the end of its log:"
        tail -n 15 "$OUT"/quality_${j}_*.log
    fi
done
echo "=== results (JSON lines of kind result; configs and train curves are in $OUT/quality_*.jsonl)"
for f in "$OUT"/quality_*.jsonl; do
    [ -e "$f" ] || continue
    grep -h '"kind": "result"' "$f" || echo "{\"file\": \"$f\", \"result\": null, \"last\": $(tail -n 1 "$f" || echo null)}"
done
python3 bench/quality_table.py "$OUT" || true  # a line per run, and per configuration over its seeds
if [ "${PACK:-0}" = 1 ]; then
    cat "$OUT"/quality_*_*.jsonl > "$OUT/quality_all.jsonl" 2>/dev/null
    for f in "$OUT"/quality_*_*.log; do
        [ -e "$f" ] && { echo "=== $f"; tail -n 40 "$f"; } >> "$OUT/quality_logs.txt"
    done
    rm -f "$OUT"/quality_*_*.jsonl "$OUT"/quality_*_*.log
fi
exit $status
