#!/usr/bin/env bash
# Session 23 (issue 15), after calls A-C made --muon-split-qkv 0.022-0.030 better at three paired points:
# (1) train.py's preset as users run it (compiled, TrainStep with CUDA graphs) with --muon-split-qkv on the GPU,
#     120 steps: the path the preset would take if the split became its default (never run on a GPU before);
# (2) alone on the card, ours_nostate with --muon-split-qkv and its feed-forward widened to the preset's parameter
#     count (ff_mult 4.75, 19.926M), seed 0, 16 x 2048: the state's worth under the split, and whether this shape's
#     "unspecified launch failure" (twice, both times sharing the card) happens alone.
# Run from the repository root as .runs/s23_callD.sh, carrying .whl, .corpora/xz and .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
SITE=/tmp/site
python3 -m pip install -q --no-index --no-deps --target "$SITE" .whl/beartype-*.whl
xz -dc .corpora/xz/linux_c.train.bin.xz | head -c 30000000 > /tmp/lc.bin
mkdir -p $OUT/train_py
PYTHONPATH=$PWD:$SITE timeout 170 python3 train.py --data /tmp/lc.bin --out-dir /tmp/tp --preset long-documents \
    --muon-split-qkv --doc-separator 0 --max-steps 120 --eval-interval 120 --eval-batches 4 --sample-interval 0 \
    --checkpoint-interval 120 --log-interval 20 > $OUT/train_py/split_compiled.txt 2>&1; echo "train.py rc=$?"
cp /tmp/tp/metrics.jsonl $OUT/train_py/ 2>/dev/null
grep -v "^WARNING" $OUT/train_py/split_compiled.txt | tail -n 5
P="--preset long-documents --no-compile --batch 16 --seq 2048 --warmup 50 --optimizer muon --muon-lr 3e-3 --seed 0"
OUT=$OUT/q100m_muon_split_nostate_ff_alone PACK=1 RUN_TIMEOUT=300 EVAL_MARGIN=25 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="ours_nostate:$P --muon-split-qkv --set ff_mult=4.75" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 4
