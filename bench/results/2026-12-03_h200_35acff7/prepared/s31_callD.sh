#!/usr/bin/env bash
# Prepared in session 30 (issue 15, goal 2: where the step's time goes with the optimizer training uses), if device
# time is left after s31_callA-C: kernel profiles of the preset's compiled step reading documents with Muon (as
# bench/quality.py trains: 3e-3 per map, AdamW 6e-4 for the rest) on 16 x 2048 and 32 x 2048. Session 30's profile
# with fused AdamW took 28.43 ms a step where training ran at 30.8 ms a step (1,062.9k tokens/s on 16 x 2048).
# About 300 s, mostly compilation. Run from the repository root as .runs/s31_callD.sh, carrying .whl.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
export PYTHONUNBUFFERED=1
mkdir -p $OUT /tmp/site
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
for shape in 16x2048 32x2048; do
    PYTHONPATH=$PWD:/tmp/site timeout 280 python3 bench/profile_step.py --cfg long-documents --shape $shape \
        --documents --optimizer muon --steps 20 --profile-steps 10 > $OUT/profile_muon_$shape.txt 2>&1
    tail -n 35 $OUT/profile_muon_$shape.txt | head -n 14
done
