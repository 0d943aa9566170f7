#!/usr/bin/env bash
# Prepared in session 29 (issue 15, goal 2: where the preset's time goes now). Kernel profiles of the preset's compiled
# training step reading documents (memories and states carried, rows starting documents at linux_c's rate), with
# value_residual, unet_skips and logit_softcap=15, on 16 x 2048 and on 32 x 2048; the fifteenth session's profile (16
# rows, before those options) found 29 ms of kernels in a 29 ms step, attention 11.4 of them. About 400 s, mostly
# compilation. Run from the repository root as .runs/s30_callC.sh, carrying .whl.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
mkdir -p $OUT /tmp/site
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
for shape in 16x2048 32x2048; do
    PYTHONPATH=$PWD:/tmp/site timeout 285 python3 bench/profile_step.py --cfg long-documents --shape $shape \
        --documents --steps 20 --profile-steps 10 > $OUT/profile_$shape.txt 2>&1
    tail -n 35 $OUT/profile_$shape.txt | head -n 8
done
