#!/usr/bin/env bash
# Issue 16: does the query-routed kNN layer recall passkeys as the exact one does, at less cost? One
# call on 2 GPUs (< 9 minutes): per GPU, one passkey variant trained for TRAIN_SECONDS and scored at
# D = 64k and 256k (50 trials each), then bench/knn_speed.py's training steps over an empty and a
# full (262,144-entry) store and passkey evaluation at 256k, for that variant's kNN layer.
#
#   bash bench/routed_gpu.sh          # GPU 0: query_routed, GPU 1: knn (exact)
#   ROUTED=1 bash bench/routed_gpu.sh # also CoLT5's block-level "routed", sharing GPU 1 (its recall is
#                                     # comparable, its and knn's timings then are not)
#
# Carry `.whl` holding beartype, colt5-attention, local-attention and hyper-connections (pure Python;
# copies are in /work/main/.whl). OUT (default bench_out/routed) gets the JSONL, .md tables and logs.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench_out/routed}
TRAIN_SECONDS=${TRAIN_SECONDS:-200}
ROUTED=${ROUTED:-0}
mkdir -p "$OUT"
SITE=/tmp/site
wheels=$(ls .whl/*.whl 2>/dev/null | grep -Ei '/(beartype|colt5_attention|local_attention|hyper_connections)-' || true)
[ -n "$wheels" ] && python3 -m pip install -q --no-index --no-deps --target "$SITE" $wheels
export PYTHONPATH=$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}

variant() {  # GPU, passkey variant: recall, then the cost of its kNN layer
    local gpu=$1 name=$2
    CUDA_VISIBLE_DEVICES=$gpu timeout -k 10 390 python3 bench/passkey.py --variants "$name" --seed 7 \
        --train-seconds "$TRAIN_SECONDS" --fillers 65536 --long --trials 50 --max-seconds 380 \
        --out "$OUT/passkey_$name.jsonl" > "$OUT/passkey_$name.log" 2>&1
    CUDA_VISIBLE_DEVICES=$gpu timeout -k 10 120 python3 bench/knn_speed.py --variant "$name" --impl "$name" \
        --cases train,eval --steps 3 --fillers 262144 --trials 10 \
        --out "$OUT/knn_speed_$name.jsonl" > "$OUT/knn_speed_$name.log" 2>&1
}

variant 0 query_routed &
variant 1 knn &
[ "$ROUTED" = 1 ] && variant 1 routed &
wait
for f in "$OUT"/passkey_*.md "$OUT"/knn_speed_*.md; do
    [ -e "$f" ] && { echo "=== $f"; cat "$f"; }
done
echo "=== training and evaluation records (steps, tokens/s, peak GiB, seconds per D)"
grep -h '"case": "\(train\|eval\|error\)"' "$OUT"/passkey_*.jsonl "$OUT"/knn_speed_*.jsonl
for f in "$OUT"/*.log; do echo "=== tail of $f"; tail -n 3 "$f"; done
