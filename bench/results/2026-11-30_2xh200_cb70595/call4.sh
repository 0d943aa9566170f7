#!/usr/bin/env bash
# call 4: train.py --preset long-documents compiled on GPU 0; the documents TrainStep GPU tests on GPU 1.
set -u
nvidia-smi --query-compute-apps=pid --format=csv,noheader | xargs -r kill -9
python3 -m pip install -q --no-index --no-deps --target /tmp/site $(ls .whl/*.whl | grep -v block_recurrent) 2>/dev/null
export PYTHONPATH=$PWD:/tmp/site PYTHONUNBUFFERED=1
python3 - <<'PY'
import glob, sysconfig
files = sorted(glob.glob(sysconfig.get_paths()["stdlib"] + "/**/*.py", recursive=True))
open("/tmp/py.bin", "wb").write(b"\0".join(open(f, "rb").read().replace(b"\0", b" ") for f in files))
print(len(files), "files")
PY
CUDA_VISIBLE_DEVICES=0 timeout -k 5 175 python3 train.py --preset long-documents --data /tmp/py.bin --doc-separator 0 \
    --max-steps 400 --warmup-steps 40 --eval-interval 200 --out-dir /tmp/run > $OUT/train_preset.log 2>&1 &
CUDA_VISIBLE_DEVICES=1 timeout -k 5 175 python3 -m pytest -q -m gpu tests/test_gpu.py -k reading_documents > $OUT/gpu_documents_tests.txt 2>&1 &
wait
tail -n 25 $OUT/train_preset.log; tail -n 15 $OUT/gpu_documents_tests.txt
