#!/usr/bin/env bash
# Side-by-side speed benches of this repository ("ours") and the seed package 0.4.4 ("seed"), same card,
# same run. From the repository root, with the wheels in .whl/ (no internet needed):
#
#   bash bench/run_gpu.sh                    # everything (~4-8 min); or split across two commands:
#   CASES=train bash bench/run_gpu.sh        # training: seed config x3 shapes + the large model
#   CASES=generate bash bench/run_gpu.sh     # generation: batch 1 to 2048 / 8192, batch 16 to 2048
#
# Environment knobs:
#   OUT=dir               JSONL results and report.md go here (default ./bench_out)
#   CASES=all|train|generate
#   IMPLS="ours seed"     which implementations to run
#   TRAIN_CASES=...       substrings selecting training cases, e.g. "seed_b4x2048,large"
#   LARGE_SHAPE=16x2048   batch x tokens of the large-model training case
#   GEN_CASES=1x2048,1x8192,16x2048   batch x total length of the generation cases
#   GEN_MAX_SECONDS=60    per-case budget (30 with CASES=all, to fit 10 minutes); slower generators are
#                         measured on fewer tokens (the seed, ~27 tok/s, then stops short of 2048)
#   EXTRA_ARGS="--device cpu --tiny"  passed to both benches (a CPU smoke test of this script)
#   OURS_TRAIN_ARGS="--cuda-graph"  passed to ours' training bench only (default: TrainStep's CUDA
#                         graphs; "--cuda-graph --compile" compiles too, minutes per shape; "" for eager)
#   OURS_GEN_ARGS=""      passed to ours' generation bench only ("--compile": the compiled decoding step)
#   PYTHON=python3, WHL=.whl
set -uo pipefail  # no -e: one failing bench must not lose the others' results

PYTHON=${PYTHON:-python3}
OUT=${OUT:-./bench_out}
WHL=${WHL:-.whl}
CASES=${CASES:-all}
IMPLS=${IMPLS:-ours seed}
SEED_DIR=/tmp/seed
DEPS_DIR=/tmp/deps
REPO=$PWD
mkdir -p "$OUT"

# Install a pure-python wheel into a folder of its own; without pip, a wheel is a zip that unpacks
# into the same importable layout.
install_wheel() {  # install_wheel PATTERN TARGET
  local wheel
  wheel=$(ls $WHL/$1 2>/dev/null | head -n 1)
  if [ -z "$wheel" ]; then echo "missing wheel $WHL/$1" >&2; return 1; fi
  mkdir -p "$2"
  "$PYTHON" -m pip install --quiet --no-index --no-deps --upgrade --target "$2" "$wheel" 2>/dev/null \
    || "$PYTHON" -m zipfile -e "$wheel" "$2"
}

rm -rf "$SEED_DIR" "$DEPS_DIR"
install_wheel 'block_recurrent_transformer_pytorch-0.4.4-*.whl' "$SEED_DIR"
install_wheel 'beartype-*.whl' "$DEPS_DIR"
# torch does not bring these; install them only where missing so the machine's own copies win
"$PYTHON" -c 'import einops' 2>/dev/null || install_wheel 'einops-*.whl' "$DEPS_DIR"
"$PYTHON" -c 'import packaging' 2>/dev/null || install_wheel 'packaging-*.whl' "$DEPS_DIR"  # the seed imports it

pythonpath() {  # the package each label measures comes first on the path
  case $1 in
    ours) echo "$DEPS_DIR:$REPO" ;;
    seed) echo "$SEED_DIR:$DEPS_DIR" ;;
    *) echo "unknown impl $1" >&2; return 1 ;;
  esac
}

# which package each label imports (from /, as `python -c` puts the current folder first on the path;
# the benches run as scripts, whose first path entry is bench/)
for impl in $IMPLS; do
  (cd / && PYTHONPATH=$(pythonpath "$impl") "$PYTHON" -c \
    'import block_recurrent_transformer_pytorch as m, os; print("'"$impl"' ->", os.path.dirname(m.__file__))')
done
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv 2>/dev/null

if [ "$CASES" = all ] || [ "$CASES" = train ]; then
  for impl in $IMPLS; do
    echo "== train $impl"
    PYTHONPATH=$(pythonpath "$impl") "$PYTHON" bench/train_speed.py --impl "$impl" --out "$OUT/train_$impl.jsonl" \
      --large-shape "${LARGE_SHAPE:-16x2048}" --cases "${TRAIN_CASES:-}" ${EXTRA_ARGS:-} \
      $([ "$impl" = ours ] && echo "${OURS_TRAIN_ARGS---cuda-graph}")
  done
fi

if [ "$CASES" = all ] || [ "$CASES" = generate ]; then
  if [ "$CASES" = all ]; then GEN_MAX_SECONDS=${GEN_MAX_SECONDS:-30}; else GEN_MAX_SECONDS=${GEN_MAX_SECONDS:-60}; fi
  for impl in $IMPLS; do
    echo "== generate $impl"
    PYTHONPATH=$(pythonpath "$impl") "$PYTHON" bench/generate_speed.py --impl "$impl" --out "$OUT/generate_$impl.jsonl" \
      --max-seconds "$GEN_MAX_SECONDS" ${GEN_CASES:+--cases "$GEN_CASES"} ${EXTRA_ARGS:-} \
      $([ "$impl" = ours ] && echo "${OURS_GEN_ARGS:-}")
  done
fi

echo
"$PYTHON" bench/report.py "$OUT" | tee "$OUT/report.md"
