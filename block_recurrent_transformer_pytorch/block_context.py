"""The interface through which a block runs through the layers, shared by training and decoding.

``BlockRecurrentTransformer.forward_block`` asks it where the block's keys/values go and what they
attend to. Two classes implement it: ``WholeBlock`` (transformer.py: a block run from its start,
in training and the reference decoder) and ``DecodeCache`` (cache.py: a block continued a few
tokens at a time from a static cache, in cached decoding). Typing ``forward_block`` with this
protocol rather than with ``DecodeCache`` keeps the model from depending on the decoder.
"""

from __future__ import annotations

from typing import Optional, Protocol

from torch import Tensor

from .attention import Mask
from .state import StateView


class BlockContext(Protocol):
    causal: bool  # True: the queries need a lower-right causal alignment; False: the mask encodes it
    length: int  # tokens of the block already in (0 for a whole block)

    def rotary(self, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """Rotary tables for the next n tokens of the block."""

    def attention_mask(self, n: int) -> Optional[Mask]:
        """The mask of the next n queries over [memories | block] (a boolean tensor, or ``MemoryRows``),
        or None (no mask: flash)."""

    def previous_input(self, index: int) -> Optional[Tensor]:
        """Layer ``index``'s input (b, 1, dim) of the token before the next ones (token_shift), or None
        where the next token starts the block."""

    def extend(self, index: int, h: Tensor, k_positioned: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add the new tokens' layer inputs h (before the layer's norm) and keys/values to layer
        ``index``; return the keys/values its queries attend to."""

    def view(self, i: int) -> StateView:
        """State i as this block reads and writes it."""

    def layer_kv(self, index: int) -> tuple[Tensor, Tensor]:
        """Layer ``index``'s raw block keys and values (what the state write reads)."""

    def stacked_kv(self) -> Tensor:
        """Every layer's raw block keys/values, to push to the memories when the block is full."""

    def stacked_inputs(self) -> Optional[Tensor]:
        """Every layer's block inputs (before its norm), to push with them (memory_kv_from_inputs), else None."""

    def advance(self, n: int) -> None:
        """n more tokens of the block are in."""
