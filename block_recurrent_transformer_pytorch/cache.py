"""A static key/value cache for decoding one block at a time, in the style of gpt-fast.

Within a block nothing the block attends to moves: its memories sit at positions -M..-1 and its
tokens at 0..W-1, and the recurrent states it reads are those of the block boundary. So at each
block boundary the cache positions (qk-norm + rotary) every layer's memory keys once and
computes the state views once; each new token then only projects, positions and writes its own
key/value into its slot. When the block fills, the model writes the states and pushes the
memories exactly as the full forward does, from the raw keys/values (and, with
memory_kv_from_inputs, the layers' inputs) kept here, and the cache starts the next block.

Every tensor a decoding step reads or writes lives at a fixed address, and the step's position
is a device tensor: attention runs over the whole buffer with a mask instead of a slice whose
length grows. So one step can be captured once as a CUDA graph and replayed for every token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
from torch import Tensor

from .memory import Memories
from .state import StateView

if TYPE_CHECKING:
    from .transformer import BlockRecurrentTransformer


class DecodeCache:
    """Preallocated per-layer keys/values of [memories | current block], indexed by slot."""

    def __init__(self, model: "BlockRecurrentTransformer", batch: int, device: torch.device, dtype: torch.dtype) -> None:
        config = model.config
        capacity = config.compressed_mem_len + config.xl_memory_len + config.block_width  # memories, then the block
        shape = (config.depth, batch, config.kv_heads, capacity, config.dim_head)
        self.model = model
        self.keys = torch.zeros(shape, device=device, dtype=dtype)    # qk-normed and rotated
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        # raw keys/values of the current block: what the state write and the memory push consume
        self.block_kv = torch.zeros(config.depth, 2, batch, config.kv_heads, config.block_width, config.dim_head,
                                    device=device, dtype=dtype)
        # the layers' inputs of the current block (the residual stream, in its dtype, before each
        # layer's norm), pushed with memory_kv_from_inputs and read by the next token's token_shift (else None)
        self.pushes_inputs, self.token_shift = config.memory_kv_from_inputs, config.token_shift
        self.block_inputs = torch.zeros(config.depth, batch, config.block_width, config.dim, device=device,
                                        dtype=model.token_emb.weight.dtype) \
            if self.pushes_inputs or self.token_shift else None
        self.slots = torch.arange(capacity, device=device)
        self.memory_valid = torch.zeros(batch, capacity, dtype=torch.bool, device=device)
        self.memory_len = torch.zeros((), dtype=torch.long, device=device)
        self.position = torch.zeros((), dtype=torch.long, device=device)  # next token's place in the block
        self.length = 0  # the same on the host, for control flow (is the block full?)
        self.block_rotary = model.rotary(0, config.block_width)
        self.views: dict[int, StateView] = {}

    causal = False  # the attention mask below encodes causality over the static buffer

    def begin_block(self, memories: Memories, states: list[Tensor]) -> None:
        """Load, in place, the memories and state views that the next block attends to."""
        model = self.model
        rotary, m = model.memory_rotary(memories), memories.length
        first_values = None  # layer 0's XL values from inputs, which the layers above mix in (value_residual)
        for index in range(len(model.layers)):
            # as the full forward positions them (projected afresh from their inputs, if kept), once a block
            k, v, xl_values = model.positioned_memory(memories, index, rotary, self.keys.dtype, first_values)
            if index == 0:
                first_values = xl_values
            self.keys[index, :, :, :m] = k
            self.values[index, :, :, :m] = v
        valid = memories.memory_mask(model.config)
        self.memory_valid.zero_()
        self.memory_valid[:, :m] = True if valid is None else valid
        self.memory_len.fill_(m)
        self.position.zero_()
        self.length = 0
        for i, state in enumerate(model.states):
            view = state.view(states[i])
            if i not in self.views:  # own copies: view.state is the caller's tensor, never to be written
                self.views[i] = StateView(view.state.clone(), view.normed.clone(), view.k.clone(), view.v.clone())
            else:  # in place: a captured graph reads these addresses
                held = self.views[i]
                for mine, new in ((held.state, view.state), (held.normed, view.normed), (held.k, view.k),
                                  (held.v, view.v)):
                    mine.copy_(new)

    def rotary(self, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """Rotary tables for the next n tokens of the block."""
        index = self.position + torch.arange(n, device=self.position.device)
        return tuple(table[index] for table in self.block_rotary)

    def attention_mask(self, n: int) -> Tensor:
        """(b, 1, n, capacity): each new query sees its row's valid memories and the block up to itself."""
        query_slot = self.memory_len + self.position + torch.arange(n, device=self.slots.device)
        in_block = (self.slots >= self.memory_len) & (self.slots <= query_slot[:, None])
        return self.memory_valid[:, None, None, :] | in_block

    def previous_input(self, index: int) -> Optional[Tensor]:
        """Layer ``index``'s input (b, 1, dim) of the block's latest token, zeros at the block's start
        (token_shift shifts in zeros there, as a whole block does); None without token_shift. Read from
        its slot, like the keys: a captured step's warm-up runs, rewound, leave what the next step
        reads as it was; and a tensor whatever the position, so that the graph replays at every one."""
        if not self.token_shift:
            return None
        latest = self.block_inputs[index].index_select(1, (self.position - 1).clamp(min=0).view(1))
        return torch.where(self.position > 0, latest, torch.zeros_like(latest))  # never a stale slot's NaN

    def extend(self, index: int, h: Tensor, k_positioned: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write new tokens' keys/values (b, kv_heads, n, d) into layer ``index`` (and their layer inputs
        h (b, n, dim) with memory_kv_from_inputs or token_shift); return its whole buffers."""
        positions = self.position + torch.arange(k.shape[-2], device=k.device)
        slots = self.memory_len + positions
        dtype = self.keys.dtype
        self.keys[index].index_copy_(2, slots, k_positioned.to(dtype))
        self.values[index].index_copy_(2, slots, v.to(dtype))
        self.block_kv[index, 0].index_copy_(2, positions, k.to(dtype))
        self.block_kv[index, 1].index_copy_(2, positions, v.to(dtype))
        if self.block_inputs is not None:
            self.block_inputs[index].index_copy_(1, positions, h.to(self.block_inputs.dtype))
        return self.keys[index], self.values[index]

    def view(self, i: int) -> StateView:
        """State i's view for this block (computed at the block's start)."""
        return self.views[i]

    def layer_kv(self, index: int) -> tuple[Tensor, Tensor]:
        """Layer ``index``'s raw block keys and values (what the state write reads)."""
        return self.block_kv[index, 0], self.block_kv[index, 1]

    def stacked_kv(self) -> Tensor:
        """(depth, 2, b, kv_heads, block_width, d): every layer's raw block keys/values."""
        return self.block_kv

    def stacked_inputs(self) -> Optional[Tensor]:
        """(depth, b, block_width, dim): every layer's block inputs with memory_kv_from_inputs, else None."""
        return self.block_inputs if self.pushes_inputs else None

    def advance(self, n: int) -> None:
        """n more tokens of the block are in."""
        self.position += n
        self.length += n
