#!/usr/bin/env bash
# Session 22, prepared in session 21 (about 120 s): alone on the card, what one optimizer step costs the
# long-documents model (bench/optimizer_speed.py: the seed's Adam, AdamW, torch.optim.Muon + AdamW, BatchedMuon +
# AdamW), then the GPU tests of train.py's Muon (tests/test_gpu.py -k muon: MuonAdamW's step against the
# CPU's, BatchedMuon against torch.optim.Muon). Run from the repository root as
# .runs/s22_callC.sh, carrying .whl and .runs.
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
