"""A static key/value cache for decoding one block at a time, in the style of gpt-fast.

Within a block nothing the block attends to moves: its memories sit at positions -M..-1 and its
tokens at 0..W-1, and the recurrent states it reads are those of the block boundary. So at each
block boundary the cache positions (qk-norm + rotary) every layer's memory keys once and
computes the state views once; each new token then only projects, positions and appends its own
key/value. When the block fills, the model writes the states and pushes the memories exactly as
the full forward does, from the raw keys/values kept here, and the cache starts the next block.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .memory import Memories
from .state import StateView

if TYPE_CHECKING:
    from .transformer import BlockRecurrentTransformer


class DecodeCache:
    """Preallocated per-layer keys/values of [memories | current block], indexed by position."""

    def __init__(self, model: "BlockRecurrentTransformer", batch: int, device: torch.device, dtype: torch.dtype) -> None:
        config = model.config
        capacity = config.compressed_mem_len + config.xl_mem_len + config.block_width
        shape = (config.depth, batch, config.kv_heads, capacity, config.dim_head)
        self.model = model
        self.keys = torch.zeros(shape, device=device, dtype=dtype)    # qk-normed and rotated
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        # raw keys/values of the current block: what the state write and the memory push consume
        self.block_kv = torch.zeros(config.depth, 2, batch, config.kv_heads, config.block_width, config.dim_head,
                                    device=device, dtype=dtype)
        self.memory_len = 0
        self.length = 0  # tokens of the current block seen so far
        self.views: dict[int, StateView] = {}

    def begin_block(self, memories: Memories, states: list[Tensor]) -> None:
        """Load the memories and state views that the next block attends to."""
        rotary, memory_kv = self.model.memory_rotary(memories), memories.keys_values()
        self.memory_len = memory_kv.shape[-2]
        for index in range(len(self.model.layers)):
            k, v = self.model.positioned_memory(memory_kv, index, rotary, self.keys.dtype)
            self.keys[index, :, :, :self.memory_len] = k
            self.values[index, :, :, :self.memory_len] = v
        self.views = {i: state.view(states[i]) for i, state in enumerate(self.model.states)}
        self.length = 0

    def extend(self, index: int, k_positioned: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append new tokens' keys/values (b, kv_heads, n, d) to layer ``index``; return all keys/values so far."""
        n = k.shape[-2]
        at = self.memory_len + self.length
        self.keys[index, :, :, at:at + n] = k_positioned
        self.values[index, :, :, at:at + n] = v
        self.block_kv[index, 0, :, :, self.length:self.length + n] = k
        self.block_kv[index, 1, :, :, self.length:self.length + n] = v
        return self.keys[index, :, :, :at + n], self.values[index, :, :, :at + n]
