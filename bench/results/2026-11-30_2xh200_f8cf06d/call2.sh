#!/usr/bin/env bash
# session 8, call 2: passkey knn (GPU 0) and query_routed (GPU 1), each alone on its GPU.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
OUT_ROOT=$OUT
OUT=$OUT_ROOT/passkey VARIANTS="knn query_routed" TRAIN_SECONDS=200 MAX_SECONDS=365 bash bench/passkey_gpu.sh > $OUT_ROOT/passkey_summary.txt 2>&1
tar -C $OUT_ROOT -czf $OUT_ROOT/passkey.tgz passkey && rm -rf $OUT_ROOT/passkey
tail -n 30 $OUT_ROOT/passkey_summary.txt
