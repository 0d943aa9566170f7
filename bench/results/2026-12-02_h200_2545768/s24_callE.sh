#!/usr/bin/env bash
# Session 24: the XL peer's compile fix (0bb0269) on a GPU: the XL 1024 + 1024 like for like (Muon, 32 x 1024), 20 s
# of training after the default 2 untimed steps, logged every 20 steps; quality_table.py's start+s must be about 0.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
X="--preset long-documents --xl-match-params --batch 32 --seq 1024 --seg 1024 --mem 1024 --optimizer muon --muon-lr 3e-3"
OUT=$OUT/xl_clock PACK=1 RUN_TIMEOUT=140 EVAL_MARGIN=20 GPUS=0 \
    COMMON="--corpus linux_c --eval-bytes 1e5 --log-every 20 --seconds 20" RUNS="xl:$X --seed 0" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 2 | cut -c1-150
python3 bench/quality_table.py $OUT/xl_clock/quality_all.jsonl | head -3
grep -o '"step": [0-9]*, "tokens": [0-9]*, [^}]*"train_s": [0-9.]*' $OUT/xl_clock/quality_all.jsonl | sed 's/"loss.*train_s/train_s/' | head -4
