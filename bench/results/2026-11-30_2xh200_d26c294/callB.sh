#!/usr/bin/env bash
# Prepared in session 11 (issue 15): goal 3 on the current preset (4 key/value heads): ours_unread (same initial
# weights and documents, state reads held at zero) at seeds 0 and 1 on linux_c (GPU 0), paired against call C of
# session 11 (q100m_gqa_all.jsonl quality_0_ours / quality_1_ours); and the second domain, text_docs, 100M tokens,
# seed 0: the preset and the like-for-like XL 1024 + 1024 (GPU 1). Carry .whl, .runs, .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
P="--preset long-documents --no-compile --batch 16 --seq 2048"
X="--preset long-documents --xl-match-params --batch 16 --seq 1024"
OUT=$OUT/q_unread_kv4 PACK=1 RUN_TIMEOUT=575 EVAL_MARGIN=35 GPUS=0 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 100e6" \
    RUNS="ours_unread:$P --seed 0 ; ours_unread:$P --seed 1" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 6 &
sleep 20  # the first invocation installs the wheels into /tmp/site; two installing at once would race
OUT=$OUT/q_text PACK=1 RUN_TIMEOUT=575 EVAL_MARGIN=35 GPUS=1 \
    COMMON="--corpus text_docs --eval-bytes 1e6 --log-every 200 --tokens 100e6" \
    RUNS="ours:$P --seed 0 ; xl:$X --seg 1024 --mem 1024 --seed 0" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 6 &
wait
