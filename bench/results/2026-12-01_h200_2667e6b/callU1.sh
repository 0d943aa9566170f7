#!/usr/bin/env bash
# Session 21 (issue 15, goal 1): Muon for the hidden matrices (torch.optim.Muon, update RMS matched to AdamW's), the
# preset otherwise, seed 0, two peak rates side by side: 1.2e-3 (2x AdamW's 6e-4) and 3e-3 (5x). Paired against the
# preset at seed 0 (bench/results/2026-11-30_2xh200_6749608/q100m_warmup50_all.jsonl, quality_2_ours: same initial
# weights and documents). Run from the repository root, carrying .whl and .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
python3 -c "import inspect, torch; print(torch.__version__); assert 'adjust_lr_fn' in inspect.signature(torch.optim.Muon).parameters" || exit 3
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --batch 16 --seq 2048 --warmup 50 --optimizer muon --seed 0"
OUT=$OUT/q100m_muon_s0 PACK=1 RUN_TIMEOUT=575 EVAL_MARGIN=25 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 100 --tokens 100e6" \
    RUNS="ours:$P --muon-lr 1.2e-3 ; ours:$P --muon-lr 3e-3" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 6
