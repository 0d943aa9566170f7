#!/usr/bin/env bash
# Prepared in session 31 (issue 15), after s32_callA-D (the session after next, if the next has no time left). One
# change at 100M tokens, uncompiled, 16 x 2048 (s27_pair.sh's rows, to pair with the thirty-first session's runs), seeds
# 0 and 1 one after the other, each alone on the card, each paired (same data, same initial draw: the option starts as
# the model without it and draws nothing) with the thirty-first session's run of the preset's model as it now is
# (qk-rmsnorm in every layer) at its seed, bench/results/2026-12-03_h200_b7b6dcb/q100m_qknorm_all_s{0,1}_all.jsonl:
# quality_0_ours (0.7649, 0.7701):
#   --set embedding_mixing=true (every layer above the first takes a * h + b * x0, the block's token embeddings mixed
#   back into its input, a learned (a, b) per layer from (1, 0); modded-nanogpt's x0 lambdas; new in session 31,
#   CPU-tested only).
# About 570 s. Run from the repository root as .runs/s32_callE.sh, carrying .whl, .corpora/xz and .runs.
set -u
RUN_TIMEOUT=282 RUNLIST="embmix_s0|ours|--seed 0 --set embedding_mixing=true;embmix_s1|ours|--seed 1 --set embedding_mixing=true" \
    bash bench/results/2026-12-03_h200_d394d9a/s27_pair.sh
