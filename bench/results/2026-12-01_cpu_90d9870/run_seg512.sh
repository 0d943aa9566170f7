cd /work/main
T="--device cpu --preset tiny --set dim=128 --set depth=4 --set heads=4 --set dim_head=32 --set kv_heads=2 --set block_width=128 --set max_seq_len=512 --set num_state_vectors=64 --set recurrent_layers=3, --set embedding_init_std=0.02 --set xpos_scale_base=1000000000 --set rotary_dim=16 --set memory_kv_from_inputs=true --corpus linux_c --tokens 5e6 --batch 8 --seq 512 --eval-bytes 5e5 --lr 2e-3 --warmup 100 --seed 0"
OMP_NUM_THREADS=1 .venv/bin/python bench/quality.py --model ours_unread $T --out /tmp/cpu17/unread_seg512.jsonl > /tmp/cpu17/unread_seg512.log 2>&1 &
OMP_NUM_THREADS=1 .venv/bin/python bench/quality.py --model ours_unread $T --set detach_block_memories=true --out /tmp/cpu17/unread_seg512_detached.jsonl > /tmp/cpu17/unread_seg512_detached.log 2>&1 &
wait
