#!/usr/bin/env bash
# Prepared in session 30 (issue 15), after s31_callA.sh and s31_callB.sh. Two more changes to the preset at 100M
# tokens, uncompiled, one after the other, each alone on the card (s27_pair.sh), each paired (same data, same initial
# draw) with the preset's run of its seed with the cap:
#   --schedule wsd --decay-frac 0.4 (the peak rate held, then a linear decay to a tenth over the last 40% of the
#   budget, instead of the cosine; new in session 30), seed 0, against
#   bench/results/2026-12-03_h200_340d58e/q100m_softcap15_s0_all.jsonl:quality_0_ours (0.7830);
#   --mem-dropout 0 --state-dropout 0 (0.0018 better at seed 0 before the cap, twenty-seventh session: not resolved),
#   seed 1, against bench/results/2026-12-03_h200_9fe6860/q100m_softcap15_s1_all.jsonl:quality_0_ours (0.7864).
# About 570 s. Run from the repository root as .runs/s31_callC.sh, carrying .whl, .corpora/xz and .runs.
set -u
RUN_TIMEOUT=282 RUNLIST="wsd40_s0|ours|--seed 0 --schedule wsd --decay-frac 0.4;dropout0_s1|ours|--seed 1 --mem-dropout 0 --state-dropout 0" \
    bash bench/results/2026-12-03_h200_d394d9a/s27_pair.sh
