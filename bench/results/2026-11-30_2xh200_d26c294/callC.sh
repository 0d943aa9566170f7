#!/usr/bin/env bash
# Prepared in session 11 (issue 15, goal 2 like for like): 180 s of training each, one run per GPU, seed 0,
# linux_c, compiled. GPU 0: the long-documents preset (4 key/value heads); GPU 1: x-transformers' XL with the same
# attention shape (4 key/value heads) matched to its 19.93M parameters, 1024 + 1024 then 512 + 512. Nothing else
# runs on GPU 0 meanwhile (session 11's call E ran a GPU test there while the XLs trained, and XL 512 + 512 ran 24%
# slower than before). Carry .whl, .runs, .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --batch 16 --seq 2048"
X="--preset long-documents --xl-match-params --batch 16 --seq 1024"
export COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --seconds 180" PACK=1 EVAL_MARGIN=25
OUT=$OUT/t180_ours RUN_TIMEOUT=400 GPUS=0 RUNS="ours:$P --seed 0" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 4 &
sleep 20  # the first invocation installs the wheels into /tmp/site; two installing at once would race
(
  OUT=$OUT/t180_xl1024 RUN_TIMEOUT=270 GPUS=1 RUNS="xl:$X --seg 1024 --mem 1024 --seed 0" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 4
  OUT=$OUT/t180_xl512 RUN_TIMEOUT=270 GPUS=1 RUNS="xl:$X --seg 512 --mem 512 --seed 0" bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 4
) &
wait
