#!/usr/bin/env bash
# Passkey recall of memory variants (bench/passkey.py) in one device call, all at once: each variant with
# a kNN layer (knn, knn_top128, routed, query_routed) on a GPU of its own, the others side by side on
# the GPUs left (their steps and tokens/s are then shared-GPU figures, in their records). Each is
# trained for TRAIN_SECONDS and scored at D = 64k and 256k (TRIALS trials each). With SPEED=1, after
# all of them, bench/knn_speed.py's cost of each kNN variant's layer (training steps over an empty and
# a full 262,144-entry store, evaluation at 256k), one variant per GPU at a time.
#
# Why a GPU each: the small models without a kNN layer are host-bound and train about as many steps
# sharing a GPU as alone, but a kNN layer's search is GPU work: seven variants spread over two H200s
# (four kNN variants among them, two on each) trained the kNN ones 346-570 steps in 200 s instead of
# 918-1,008, and they recalled 0.00-0.66 instead of 1.00 (bench/RESULTS.md, eighth session). So N GPUs take at most N kNN variants in a call, or N - 1
# beside the others; the script refuses more (SHARE=1 spreads them round-robin regardless). On 2 GPUs
# the seven variants of issue 16's table take three calls:
#
#   VARIANTS="knn query_routed" bash bench/passkey_gpu.sh
#   VARIANTS="knn_top128 routed" bash bench/passkey_gpu.sh
#   VARIANTS="xl_only state_1seg state_kseg" bash bench/passkey_gpu.sh
#   VARIANTS="query_routed knn" SPEED=1 bash bench/passkey_gpu.sh  # recall and cost of two kNN layers
#
# VARIANTS: space-separated names of bench/passkey.py's variants (default: the seven of the table).
# GPUS: the GPU numbers to use, space-separated (default: all that nvidia-smi lists).
# SHARE=1: variant i on GPU i mod the number of GPUs, kNN or not (the measured steps then suffer).
# TRAIN_SECONDS (200), MAX_SECONDS (a variant's whole run, 380), TRIALS (50); PYTHON (python3).
# Carry `.whl` holding beartype, colt5-attention, local-attention and hyper-connections (pure Python;
# copies are in /work/main/.whl). OUT (default bench_out/passkey) gets the JSONL, .md tables and logs.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench_out/passkey}
VARIANTS=${VARIANTS:-xl_only state_1seg state_kseg knn knn_top128 routed query_routed}
TRAIN_SECONDS=${TRAIN_SECONDS:-200}
MAX_SECONDS=${MAX_SECONDS:-380}
TRIALS=${TRIALS:-50}
SPEED=${SPEED:-0}
SHARE=${SHARE:-0}
PYTHON=${PYTHON:-python3}
for value in "$TRAIN_SECONDS" "$MAX_SECONDS" "$TRIALS"; do
    if ! [[ "$value" =~ ^[0-9]+$ ]]; then
        echo "TRAIN_SECONDS, MAX_SECONDS and TRIALS must be whole numbers, got" \
             "TRAIN_SECONDS=$TRAIN_SECONDS MAX_SECONDS=$MAX_SECONDS TRIALS=$TRIALS" >&2
        exit 2
    fi
done
read -ra gpus <<< "${GPUS:-$(seq -s ' ' 0 $(($(nvidia-smi -L 2>/dev/null | wc -l) - 1)) 2>/dev/null)}"
[ "${#gpus[@]}" -ge 1 ] || gpus=(0)
for g in "${gpus[@]}"; do
    if ! [[ "$g" =~ ^[0-9]+$ ]]; then
        echo "GPUS must be GPU numbers separated by spaces, got GPUS='${GPUS:-}'" >&2
        exit 2
    fi
done
read -ra variants <<< "$VARIANTS"
mkdir -p "$OUT"
SITE=/tmp/site
wheels=$(ls .whl/*.whl 2>/dev/null | grep -Ei '/(beartype|colt5_attention|local_attention|hyper_connections)-' || true)
[ -n "$wheels" ] && "$PYTHON" -m pip install -q --no-index --no-deps --target "$SITE" $wheels
export PYTHONPATH=$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}

gpu_of() { echo "${gpus[$(($1 % ${#gpus[@]}))]}"; }
has_knn_layer() { case $1 in knn|knn_top128|routed|query_routed) return 0 ;; esac; return 1; }

# the GPU of each variant: the kNN variants take the first GPUs, one each; the others share the rest
knn_count=0 other_count=0
for name in "${variants[@]}"; do
    if has_knn_layer "$name"; then knn_count=$((knn_count + 1)); else other_count=$((other_count + 1)); fi
done
if [ "$SHARE" != 1 ] && { [ "$knn_count" -gt "${#gpus[@]}" ] ||
                          { [ "$other_count" -gt 0 ] && [ "$knn_count" -ge "${#gpus[@]}" ]; }; }; then
    echo "VARIANTS='${variants[*]}' has $knn_count variant(s) with a kNN layer and $other_count without for" \
         "${#gpus[@]} GPU(s): each kNN variant needs a GPU of its own (at most ${#gpus[@]}, or $((${#gpus[@]} - 1))" \
         "beside the others). Split VARIANTS over calls, or set SHARE=1 to share the GPUs regardless." >&2
    exit 2
fi
assigned=()
knn_index=0 other_index=0
for name in "${variants[@]}"; do
    if [ "$SHARE" = 1 ]; then
        assigned+=("$(gpu_of ${#assigned[@]})")
    elif has_knn_layer "$name"; then
        assigned+=("${gpus[$knn_index]}"); knn_index=$((knn_index + 1))
    else  # round-robin over the GPUs no kNN variant takes
        assigned+=("${gpus[$((knn_count + other_index % (${#gpus[@]} - knn_count)))]}"); other_index=$((other_index + 1))
    fi
done

for i in "${!variants[@]}"; do
    name=${variants[$i]} gpu=${assigned[$i]}
    echo "variant $name on GPU $gpu"
    CUDA_VISIBLE_DEVICES=$gpu timeout -k 10 $((MAX_SECONDS + 10)) "$PYTHON" bench/passkey.py --variants "$name" \
        --seed 7 --train-seconds "$TRAIN_SECONDS" --fillers 65536 --long --trials "$TRIALS" \
        --max-seconds "$MAX_SECONDS" --out "$OUT/passkey_$name.jsonl" > "$OUT/passkey_$name.log" 2>&1 &
done
wait
if [ "$SPEED" = 1 ]; then
    knn=()
    for name in "${variants[@]}"; do
        case $name in knn|query_routed|routed) knn+=("$name") ;; esac  # the layers knn_speed.py builds
    done
    for ((start = 0; start < ${#knn[@]}; start += ${#gpus[@]})); do  # one variant per GPU at a time
        for ((j = start; j < start + ${#gpus[@]} && j < ${#knn[@]}; j++)); do
            name=${knn[$j]}
            CUDA_VISIBLE_DEVICES=$(gpu_of "$j") timeout -k 10 120 "$PYTHON" bench/knn_speed.py --variant "$name" \
                --impl "$name" --cases train,eval --steps 3 --fillers 262144 --trials 10 \
                --out "$OUT/knn_speed_$name.jsonl" > "$OUT/knn_speed_$name.log" 2>&1 &
        done
        wait
    done
fi
for f in "$OUT"/passkey_*.md "$OUT"/knn_speed_*.md; do
    [ -e "$f" ] && { echo "=== $f"; cat "$f"; }
done
echo "=== training and evaluation records (steps, tokens/s, peak GiB, seconds per D)"
grep -h '"case": "\(train\|eval\|error\|skipped\)"' "$OUT"/passkey_*.jsonl "$OUT"/knn_speed_*.jsonl 2>/dev/null
for f in "$OUT"/*.log; do echo "=== tail of $f"; tail -n 3 "$f"; done
