#!/usr/bin/env bash
# Session 31, call C (issue 15): all_layers_qk_rmsnorm=true scored 0.7649 against the preset's 0.7830 at seed 0 in
# call A (100M tokens). Confirm at seed 1 (paired with
# bench/results/2026-12-03_h200_9fe6860/q100m_softcap15_s1_all.jsonl:quality_0_ours, 0.7864), then the wsd schedule
# on top of it at seed 0 (paired with call A's q100m_qknorm_all_s0, 0.7649). Each alone on the card (s27_pair.sh).
set -u
RUN_TIMEOUT=282 RUNLIST="qknorm_all_s1|ours|--seed 1 --set all_layers_qk_rmsnorm=true;qknorm_all_wsd40_s0|ours|--seed 0 --set all_layers_qk_rmsnorm=true --schedule wsd --decay-frac 0.4" \
    bash bench/results/2026-12-03_h200_d394d9a/s27_pair.sh
