#!/usr/bin/env bash
# Prepared in session 32 (issue 15), if device time is left after s33_callA-C: one screen at 100M tokens, uncompiled,
# alone on the card: $SCREEN ("NAME|FLAGS", the seed in FLAGS). Default: Muon at 4.2e-3 instead of 3e-3 on the
# preset's 32 rows (sqrt(2) times the rate for half the steps), seed 0, with the cosine, paired with
# bench/results/2026-12-03_h200_7ae9b40/q100m_preset_b32_s0_all.jsonl:quality_0_ours (0.7829): 32 rows scored
# 0.013-0.018 worse per token than 16 with qk-rmsnorm in every layer, and 3e-3 was chosen on 16 rows (6e-3 lost 0.033
# there, before the split and qk-rmsnorm). Another: "qkscale16_wsd40_s1|--seed 1 --schedule wsd --decay-frac 0.4
# --set qk_rmsnorm_scale=16", paired with bench/results/2026-12-03_h200_7ae9b40/q100m_qknorm_all_wsd40_s1_all.jsonl:
# quality_0_ours (0.7650). Then, with what time the call has left, the compiled CUDA-graph TrainStep cases reading
# documents that the thirty-first and thirty-second sessions' limits cut (they passed in the thirtieth).
# About 270 s + TESTS_S (default 0: no tests). Run from the repository root as .runs/s33_callD.sh, carrying .whl,
# .corpora/xz and .runs.
set -u
SCREEN=${SCREEN:-"muonlr42_b32_s0|--seed 0 --batch 32 --muon-lr 4.2e-3"}
RUN_TIMEOUT=290 RUNLIST="${SCREEN%%|*}|ours|${SCREEN#*|}" bash bench/results/2026-12-03_h200_d394d9a/s27_pair.sh
echo "elapsed $SECONDS s"
if [ "${TESTS_S:-0}" -gt 0 ]; then
    mkdir -p /tmp/site $OUT/tests
    T=tests/test_gpu.py::test_cuda_graph_train_step_reading_documents_matches_eager
    PYTHONPATH=$PWD:/tmp/site timeout "$TESTS_S" python3 -m pytest -p no:cacheprovider -m gpu -rA \
        "$T[True-True-False-2-False]" "$T[True-False-True-1-False]" "$T[True-True-True-1-False]" \
        "$T[True-True-False-1-False]" > $OUT/tests/gpu_tests_callD.txt 2>&1
    grep -E "passed|failed|PASSED|FAILED|Error" $OUT/tests/gpu_tests_callD.txt | tail -n 8
    echo "elapsed $SECONDS s"
fi
