#!/usr/bin/env bash
# Session 22, prepared in session 21 (about 120 s): alone on the card, what one optimizer step costs the
# long-documents model (bench/optimizer_speed.py: the seed's Adam, AdamW, torch.optim.Muon + AdamW, BatchedMuon +
# AdamW), then the GPU tests of train.py's Muon (tests/test_gpu.py -k muon: MuonAdamW's step against the
# CPU's, BatchedMuon against torch.optim.Muon). Run from the repository root as
# .runs/s22_callC.sh, carrying .whl, .corpora/xz and .runs.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
SITE=/tmp/site
python3 -m pip install -q --no-index --no-deps --target "$SITE" .whl/beartype-*.whl
export PYTHONPATH=$PWD:$SITE
python3 -c "import inspect, torch; print(torch.__version__, inspect.signature(torch.optim.Muon))"  # BatchedMuon reads its group keys
timeout 120 python3 bench/optimizer_speed.py --out $OUT/optimizer_speed_h200.jsonl 2>&1 | grep -v "^WARNING" | tail -n 6
mkdir -p $OUT/tests
timeout 240 python3 -m pytest -p no:cacheprovider -m gpu -rA tests/test_gpu.py -k muon > $OUT/tests/gpu_tests.txt 2>&1
grep -E "PASSED|FAILED|ERROR|passed|failed" $OUT/tests/gpu_tests.txt | tail -n 6
# train.py's preset as users run it, on the GPU: Muon (MuonAdamW + BatchedMuon) in TrainStep with CUDA graphs (not
# compiled, to save device time), 80 of 160 steps, then --resume to 160: Muon's state through a checkpoint on CUDA.
xz -dc .corpora/xz/linux_c.train.bin.xz | head -c 30000000 > /tmp/lc.bin
T="python3 train.py --data /tmp/lc.bin --out-dir /tmp/tp"
mkdir -p $OUT/train_py
timeout 150 $T --preset long-documents --doc-separator 0 --no-compile --max-steps 160 --stop-at-step 80 \
    --eval-interval 80 --eval-batches 4 --sample-interval 0 --checkpoint-interval 80 --log-interval 20 \
    > $OUT/train_py/first.txt 2>&1; echo "first rc=$?"
timeout 150 $T --resume > $OUT/train_py/resume.txt 2>&1; echo "resume rc=$?"
cp /tmp/tp/metrics.jsonl /tmp/tp/*.json $OUT/train_py/ 2>/dev/null
tail -n 4 $OUT/train_py/first.txt; tail -n 12 $OUT/train_py/resume.txt
