#!/usr/bin/env bash
# Session 14, call 1 (issue 15). GPU 0: the attention change (flash on the n x m band, no padded query rows)
# under test, its kernel-time benchmark, and a kernel-time profile of the preset's compiled step (goal 2).
# GPU 1 meanwhile: goal 1's third seed for the XLs (they do not run our code): 100M tokens of linux_c, seed 2,
# like for like (compiled, 16 x 1024), 1024 + 1024 and 512 + 512. Carry .whl, .runs, .corpora/xz.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
X="--preset long-documents --xl-match-params --batch 16 --seq 1024"
(GPUS=1 OUT=$OUT/q100m_xl_seed2 PACK=1 RUN_TIMEOUT=560 EVAL_MARGIN=35 \
    COMMON="--corpus linux_c --eval-bytes 1e6 --log-every 200 --tokens 100e6" \
    RUNS="xl:$X --seg 1024 --mem 1024 --seed 2 ; xl:$X --seg 512 --mem 512 --seed 2" \
    bash bench/quality_gpu.sh 2>&1 | grep -v "^WARNING" | tail -n 6) &
sleep 20  # quality_gpu.sh installs the wheels into /tmp/site
export PYTHONPATH=$PWD:$PWD/bench:/tmp/site
mkdir -p $OUT/gpu0
(export CUDA_VISIBLE_DEVICES=0
 timeout 200 python3 -m pytest -q -m gpu tests/test_gpu.py -k "band or flash_backend or bf16_flash or train_step_matches_eager or (decoding_equals and False-False)" > $OUT/gpu0/gpu_tests.txt 2>&1
 timeout 120 python3 bench/attention_kernels.py > $OUT/gpu0/attention_kernels.txt 2>&1
 timeout 300 python3 bench/profile_step.py --cfg long-documents --shape 16x2048 > $OUT/gpu0/profile_preset.txt 2>&1) &
wait
tail -n 3 $OUT/gpu0/gpu_tests.txt; cat $OUT/gpu0/attention_kernels.txt | grep -v Warning | tail -n 8; tail -n 34 $OUT/gpu0/profile_preset.txt
