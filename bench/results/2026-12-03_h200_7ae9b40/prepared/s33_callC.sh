#!/usr/bin/env bash
# Prepared in session 32 (issue 15), after s33_callB.sh on a warm machine:
# 1. goal 2 with the preset on 16 rows instead of 32 (s33_callB.sh with ROWS=16 SKIP_XL=1: against call B's XL; with
#    qk-rmsnorm in every layer 16 rows scored 0.013-0.018 better than 32 at 100M tokens, thirty-second session, while
#    32 train about 11% more tokens a second);
# 2. then one screen at 100M tokens, uncompiled, 16 x 2048, alone on the card: $SCREEN ("NAME|FLAGS", the seed in
#    FLAGS; default a qk-rmsnorm temperature of 16 at seed 1 with wsd, paired with
#    bench/results/2026-12-03_h200_7ae9b40/q100m_qknorm_all_wsd40_s1_all.jsonl:quality_0_ours, 0.7650; at seed 0,
#    with the cosine, it gained 0.0022).
# About 520 s. Run from the repository root as .runs/s33_callC.sh, carrying .whl, .corpora/xz, .runs and .compile_cache.
set -u
SCREEN=${SCREEN:-"qkscale16_wsd40_s1|--seed 1 --schedule wsd --decay-frac 0.4 --set qk_rmsnorm_scale=16"}
ROWS=16 SKIP_XL=1 bash "$(dirname "$0")/s33_callB.sh"
RUN_TIMEOUT=290 RUNLIST="${SCREEN%%|*}|ours|${SCREEN#*|}" bash bench/results/2026-12-03_h200_d394d9a/s27_pair.sh
echo "elapsed $SECONDS s"
