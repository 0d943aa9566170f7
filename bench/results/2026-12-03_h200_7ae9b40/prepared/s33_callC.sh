#!/usr/bin/env bash
# Prepared in session 32 (issue 15), after s33_callB.sh on a warm machine:
# 1. goal 2 with the preset on 16 rows instead of 32 (s33_callB.sh with ROWS=16 SKIP_XL=1: against call B's XL; with
#    qk-rmsnorm in every layer 16 rows scored 0.013-0.018 better than 32 at 100M tokens, thirty-second session, while
#    32 train about 11% more tokens a second);
# 2. then one screen at 100M tokens, uncompiled, alone on the card: $SCREEN ("NAME|FLAGS", the seed in FLAGS; default
#    Muon at 4.2e-3 instead of 3e-3 on the preset's 32 rows (sqrt(2) times the rate for half the steps), seed 0, with
#    the cosine, paired with bench/results/2026-12-03_h200_7ae9b40/q100m_preset_b32_s0_all.jsonl:quality_0_ours
#    (0.7829): 32 rows scored 0.013-0.018 worse per token than 16 with qk-rmsnorm in every layer, and 3e-3 was chosen
#    on 16 rows (6e-3 lost 0.033 there, before the split and qk-rmsnorm). Another: "qkscale16_wsd40_s1|--seed 1
#    --schedule wsd --decay-frac 0.4 --set qk_rmsnorm_scale=16", paired with
#    bench/results/2026-12-03_h200_7ae9b40/q100m_qknorm_all_wsd40_s1_all.jsonl:quality_0_ours (0.7650).
# About 520 s. Run from the repository root as .runs/s33_callC.sh, carrying .whl, .corpora/xz, .runs and .compile_cache.
set -u
SCREEN=${SCREEN:-"muonlr42_b32_s0|--seed 0 --batch 32 --muon-lr 4.2e-3"}
ROWS=16 SKIP_XL=1 bash "$(dirname "$0")/s33_callB.sh"
RUN_TIMEOUT=290 RUNLIST="${SCREEN%%|*}|ours|${SCREEN#*|}" bash bench/results/2026-12-03_h200_d394d9a/s27_pair.sh
echo "elapsed $SECONDS s"
