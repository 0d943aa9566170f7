#!/usr/bin/env bash
# One command for everything train.py and the tests need, in a virtual environment (.venv, or $VENV):
#
#   bash scripts/setup_dev.sh
#
# then run everything with .venv/bin/python (or `source .venv/bin/activate` first). It installs, in order:
# 1. torch, first and pinned (torch==2.13.0, or $TORCH_INSTALL), unless the environment has one already:
#    installed as a dependency of the package instead, pip would pick whatever torch build it finds;
#    on a CPU machine you may prefer PyTorch's CPU build (a much smaller download), e.g.
#    TORCH_INSTALL="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" bash scripts/setup_dev.sh
# 2. this package, editable, with its test extra (pytest; tqdm, matplotlib, numpy for train.py;
#    colt5-attention for routed memory; faiss-cpu and the faiss backend's other requirements;
#    x-transformers 2.31.10, bench/quality.py's peer);
# 3. memorizing-transformers-pytorch 0.4.1 (the faiss kNN backend's store) with --no-deps: it declares
#    faiss-gpu (~1.2 GB of CUDA libraries) where faiss-cpu, installed in step 2, serves.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install -q ${TORCH_INSTALL:-torch==2.13.0}
"$PY" -m pip install -q -e ".[test]"
"$PY" -m pip install -q --no-deps memorizing-transformers-pytorch==0.4.1
"$PY" -c "import torch, block_recurrent_transformer_pytorch; print(f'ready: $VENV (torch {torch.__version__})')"
