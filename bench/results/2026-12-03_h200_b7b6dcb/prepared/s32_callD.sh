#!/usr/bin/env bash
# Prepared in session 31 (issue 15), after s32_callA-C if device time is left (else the session after). Two changes at
# 100M tokens, uncompiled, 16 x 2048 (s27_pair.sh's rows, to pair with the thirty-first session's runs), one after the
# other, each alone on the card, each paired (same data, same initial draw) with the thirty-first session's run of the
# preset's model as it now is (qk-rmsnorm in every layer) at its seed, bench/results/2026-12-03_h200_b7b6dcb/:
#   --schedule wsd --decay-frac 0.4, seed 1, against q100m_qknorm_all_s1_all.jsonl:quality_0_ours (0.7701): 0.0059
#   better at seed 0 (thirty-first session), not in the preset until this agrees;
#   --set qk_rmsnorm_scale=16 (the temperature of every layer's normalised attention and of the state's, instead of 8;
#   measured level when only the recurrent layer normalised, thirteenth session), seed 0, against
#   q100m_qknorm_all_s0_all.jsonl:quality_0_ours (0.7649).
# About 570 s. Run from the repository root as .runs/s32_callD.sh, carrying .whl, .corpora/xz and .runs.
set -u
RUN_TIMEOUT=282 RUNLIST="wsd40_s1|ours|--seed 1 --schedule wsd --decay-frac 0.4;qkscale16_s0|ours|--seed 0 --set qk_rmsnorm_scale=16" \
    bash bench/results/2026-12-03_h200_d394d9a/s27_pair.sh
