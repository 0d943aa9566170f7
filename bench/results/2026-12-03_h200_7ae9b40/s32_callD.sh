#!/usr/bin/env bash
# Prepared in session 31 (issue 15, goal 1 with the preset as it now is: qk-rmsnorm in every layer, 32 rows a step),
# after s32_callA-C if device time is left (A-C take about 1,550 s of the 1,800), else first in the session after.
# The preset at 100M tokens on 32 x 2048, seeds 0 and 1, uncompiled, one after the other, each alone on the card
# (s27_pair.sh; its --batch 16 overridden by --batch 32). The XLs' runs at 100M on 32 x 1024 to set them against: the
# twenty-second, twenty-third and twenty-ninth sessions' (1024 + 1024: 0.7851 / 0.7886; 512 + 512: 0.8460 / 0.8530).
# On 16 rows the preset scored 0.7649 / 0.7701 (thirty-first session, q100m_qknorm_all_s0 / _s1).
# About 570 s. Run from the repository root as .runs/s32_callD.sh, carrying .whl, .corpora/xz and .runs.
set -u
RUN_TIMEOUT=282 RUNLIST="preset_b32_s0|ours|--seed 0 --batch 32;preset_b32_s1|ours|--seed 1 --batch 32" \
    bash bench/results/2026-12-03_h200_d394d9a/s27_pair.sh
