#!/usr/bin/env bash
# Paper scale on two GPUs (issue 17), in one call of at most 10 minutes (~7 expected) on 2 H200s:
#
#   1. check: bench/fsdp_check.py's gradient check at the default model (dim 512 x 6 layers, fp32,
#      global batch 8 x 2048 x 2 accumulation), plain and with --activation-checkpointing;
#   2. fast: the ~1.3B model (PAPER below) through train.py's default path on a GPU (TrainStep +
#      compile; under torchrun the gradients all-reduced by hand, DDP-style), on 1 GPU then on 2:
#      tokens/s, MFU, peak memory (bench/ddp_check.py --no-check);
#   3. fsdp: the same model with --fsdp --activation-checkpointing (the eager loop): one process
#      unsharded first, then sharded over 2 (bench/fsdp_check.py --no-check).
#
# From the repository root, with beartype's wheel in .whl/ (carry ".whl"; the GPU image has torch,
# einops, numpy, tqdm, matplotlib):
#
#   bash bench/fsdp_gpu.sh
#
# OUT (default bench_out/): fsdp_gpu.jsonl (one record per run) and fsdp_gpu.md (the tables).
# PARTS ("check fast fsdp"): the parts to run. BATCH (16): per-GPU samples of 2048 tokens in the
# 1.3B runs, one micro-batch per step. WINDOW (5) and WINDOWS (3): steps per timed window and timed
# windows after the first (warm-up, compilation) one. Each run has a time limit (CHECK_S 60 for
# each of the two checks, FAST_S 330, FSDP_S 150 seconds: 600 in all), so a slow one cannot take
# the others' time; PARTS=fast in a call of its own gives it more (FAST_S=540). ARGS: flags added
# to every run (ARGS=--no-single: the speed on 2 GPUs only, not on 1 first); PAPER: the model's flags. A CPU smoke test of the script (~30 s):
#   PAPER="--dim 64" ARGS="--device cpu --tiny" BATCH=4 WINDOW=1 WINDOWS=1 bash bench/fsdp_gpu.sh
set -uo pipefail  # no -e: one failing part must not lose the others' results
cd "$(dirname "$0")/.."

# ~1.3B parameters (1,299.8M): 24 layers of width 2048, 16 heads of 128 (one shared key/value head,
# as the seed), GEGLU hidden width 7168 (ff-mult 5.25, a multiple of 128), one recurrent layer at
# 20 of 24 (the official code's 10 of 12), blocks of 512, 512 state vectors, segments of 1024,
# samples of 2048 tokens: the defaults for the rest.
PAPER=${PAPER:---dim 2048 --depth 24 --heads 16 --dim-head 128 --ff-mult 5.25 --recurrent-layers 20}
OUT=${OUT:-bench_out}
PARTS=${PARTS:-check fast fsdp}
BATCH=${BATCH:-16}
STEPS="--window ${WINDOW:-5} --windows ${WINDOWS:-3}"
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}  # NVLink multicast off on these machines
mkdir -p "$OUT"
SITE=/tmp/site
if ls .whl/beartype-*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --target "$SITE" .whl/beartype-*.whl
fi
export PYTHONPATH=$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv 2>/dev/null
git log -1 --format='commit %h %s' 2>/dev/null

status=0
run() {  # run NAME SECONDS SCRIPT FLAGS...: torchrun on 2 GPUs; its tables go to fsdp_gpu.md
    local name=$1 seconds=$2
    shift 2
    echo "== $name: $*"
    echo "## $name: $*" >> "$OUT/fsdp_gpu.md"
    # train.py's own output (stderr) goes to a log; stdout is the JSON record and its table
    # shellcheck disable=SC2086  # ARGS splits into flags
    timeout -k 10 "$seconds" torchrun --nproc_per_node 2 "$@" ${ARGS:-} --out "$OUT/fsdp_gpu.jsonl" \
        2> "$OUT/$name.log" | grep -v '^{' | tee -a "$OUT/fsdp_gpu.md"
    local code=${PIPESTATUS[0]}
    if [ "$code" != 0 ]; then
        status=1
        echo "== $name failed (exit $code; 124: over its $seconds s); the end of $OUT/$name.log:" | tee -a "$OUT/fsdp_gpu.md"
        tail -n 20 "$OUT/$name.log"
        # A worker killed in mid-compilation can outlive torchrun, holding its GPU memory: the next
        # run would then run out of memory (seen on H200s). None of this script's workers may stay.
        pkill -9 -f "bench/(ddp|fsdp)_check.py .*--out $OUT/fsdp_gpu.jsonl" && sleep 5
    fi
}

for part in $PARTS; do
    case $part in
        check)
            run check "${CHECK_S:-60}" bench/fsdp_check.py --no-speed --batch-size 4 --grad-accum 2
            run check_ac "${CHECK_S:-60}" bench/fsdp_check.py --no-speed --batch-size 4 --grad-accum 2 \
                --activation-checkpointing ;;
        fast)
            # shellcheck disable=SC2086  # flag lists split into words
            run fast "${FAST_S:-330}" bench/ddp_check.py --no-check $PAPER --batch-size "$BATCH" --grad-accum 1 $STEPS ;;
        fsdp)
            # shellcheck disable=SC2086
            run fsdp "${FSDP_S:-150}" bench/fsdp_check.py --no-check $PAPER --activation-checkpointing \
                --batch-size "$BATCH" --grad-accum 1 $STEPS ;;
        *) echo "unknown part $part (check, fast, fsdp)" >&2; status=1 ;;
    esac
done
echo
cat "$OUT/fsdp_gpu.md"
exit $status
