#!/usr/bin/env bash
# Prepared in session 28 (issue 15, goal 1): logit_softcap=15 at seed 1, paired with the twenty-seventh session's
# preset run at seed 1 (bench/results/2026-12-03_h200_d394d9a/q100m_vrunet_s1_all.jsonl:quality_0_ours, 0.7906; at
# seed 0 the cap was 0.0056 better), then the cap at 30 at seed 0 (paired with
# bench/results/2026-12-03_h200_d394d9a/q100m_vrunet_s0_all.jsonl:quality_0_ours, 0.7886), each alone, 100M tokens,
# uncompiled (about 235 s each). Copy s27_pair.sh (bench/results/2026-12-03_h200_d394d9a/) to .runs/ too.
# Run from the repository root as .runs/s29_callA.sh, carrying .whl, .corpora/xz and .runs.
set -u
RUN_TIMEOUT=270 RUNLIST="softcap15_s1|ours|--seed 1 --set logit_softcap=15;softcap30_s0|ours|--seed 0 --set logit_softcap=30" \
    bash .runs/s27_pair.sh
