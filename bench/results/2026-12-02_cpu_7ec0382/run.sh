cd /work/main
for seed in 0 1; do
T="--device cpu --preset tiny --set dim=128 --set depth=4 --set heads=4 --set dim_head=32 --set kv_heads=2 --set block_width=128 --set max_seq_len=256 --set num_state_vectors=64 --set recurrent_layers=3, --set embedding_init_std=0.02 --set xpos_scale_base=1000000000 --set rotary_dim=16 --set memory_kv_from_inputs=true --corpus linux_c --tokens 5e6 --batch 16 --seq 256 --eval-bytes 5e5 --lr 2e-3 --warmup 100 --optimizer muon --muon-lr 1e-2 --seed $seed"
OMP_NUM_THREADS=1 .venv/bin/python bench/quality.py --model ours $T --out /tmp/cpu22/muon_s$seed.jsonl > /tmp/cpu22/muon_s$seed.log 2>&1 &
OMP_NUM_THREADS=1 .venv/bin/python bench/quality.py --model ours $T --muon-split-qkv --out /tmp/cpu22/muon_split_s$seed.jsonl > /tmp/cpu22/muon_split_s$seed.log 2>&1 &
wait
done
echo ALLDONE > /tmp/cpu22/done
