#!/usr/bin/env bash
# session 11, call F: the compiled documents TrainStep GPU test, one case per GPU at once. Carry .whl.
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/beartype-*.whl
export PYTHONPATH=$PWD:/tmp/site
(CUDA_VISIBLE_DEVICES=0 timeout -k 5 255 python3 -m pytest -q -m gpu tests/test_gpu.py -k "reading_documents and True-True" > $OUT/t_tt.txt 2>&1; echo "TT rc $?" >> $OUT/t_tt.txt) &
(CUDA_VISIBLE_DEVICES=1 timeout -k 5 255 python3 -m pytest -q -m gpu tests/test_gpu.py -k "reading_documents and True-False" > $OUT/t_tf.txt 2>&1; echo "TF rc $?" >> $OUT/t_tf.txt) &
wait
