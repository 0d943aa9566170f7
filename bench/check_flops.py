"""Check the model-FLOP formula (common.forward_flops_per_token) against torch's FLOP counter.

Runs on CPU in a few seconds, for whichever package PYTHONPATH provides:

    PYTHONPATH=$PWD python bench/check_flops.py          # this repository: ratio 1.000
    PYTHONPATH=/tmp/seed python bench/check_flops.py     # seed 0.4.4: ~1.01 (its extra gate projection)

The counter sees the reference (non-flash) attention, which computes the whole (M + W) score
rectangle; the formula counts the causal half of the block, so the rectangle is added back here.
Memories are filled first (several segments), so every block attends to a full memory.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

import common

import block_recurrent_transformer_pytorch as brt


def counted_flops_per_token(cfg: dict[str, Any]) -> float:
    """FLOPs torch counts for one forward segment per token, memories and states full."""
    torch.manual_seed(0)
    model = brt.BlockRecurrentTransformer(**cfg).eval()
    x = torch.randint(0, cfg["num_tokens"], (1, cfg["max_seq_len"]))
    with torch.no_grad():
        memories, states = [], []
        for _ in range(3):  # fills XL and compressed memories
            _, memories, states = model(x, xl_memories=memories, states=states)
        with FlopCounterMode(display=False) as counter:
            model(x, xl_memories=memories, states=states)
    return counter.get_total_flops() / x.numel()


def main() -> None:
    small = dict(common.TINY_CONFIG, use_flash_attn=False)
    configs = {
        "tiny": small,
        "tiny_compressed": dict(small, use_compressed_mem=True, max_seq_len=128, heads=2, dim_head=32,
                                num_state_vectors=24),
        "seed": dict(common.SEED_CONFIG, use_flash_attn=False),
    }
    print(f"package: {brt.__file__}")
    for name, cfg in configs.items():
        width, inner = cfg["block_width"], cfg["heads"] * cfg["dim_head"]
        full_rectangle = cfg["depth"] * 4 * inner * (width - (width + 1) / 2)
        expected = common.forward_flops_per_token(cfg) + full_rectangle
        counted = counted_flops_per_token(cfg)
        print(f"{name:16s} counted {counted:14,.0f}  formula {expected:14,.0f}  ratio {counted / expected:.4f}")


if __name__ == "__main__":
    main()
