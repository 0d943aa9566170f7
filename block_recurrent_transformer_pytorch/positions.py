"""Rotary position embedding with xpos length-extrapolation scaling (Sun et al. 2022).

Positions are relative to the current block: the block's tokens sit at 0..n-1 and its memories
(compressed then XL, oldest first) at -M..-1. Every key keeps the same position for as long as the
block lasts, so cached generation can rotate a key once, when it is written.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn


class RotaryEmbedding(nn.Module):
    """cos/sin tables and xpos scales for integer positions, precomputed for the range every block
    uses (its memories at -max_memory..-1, its tokens at 0..block_width-1) and sliced from there.

    Precomputed tables matter under torch.compile: computed in the graph, their pow/sin/cos would be
    fused into (and recomputed by) every kernel that applies them.
    """

    def __init__(self, dim_head: int, theta: float = 10000.0, xpos_scale_base: int = 512, *,
                 max_memory: int = 0, block_width: int = 0, rotary_dim: Optional[int] = None) -> None:
        super().__init__()
        self.dim_head, self.theta, self.xpos_scale_base = dim_head, theta, xpos_scale_base
        self.rotary_dim = dim_head if rotary_dim is None else rotary_dim
        self.first = -max_memory  # the table's first position
        self.register_buffer("tables", self.compute(torch.arange(-max_memory, block_width)), persistent=False)

    def _apply(self, fn, recurse: bool = True) -> "RotaryEmbedding":
        """Move the tables with the model but keep them exact: ``model.half()`` or ``.bfloat16()``
        would round them (0.45 rad of phase error at distance 1024), so a cast table is recomputed
        in float32 (a move, or no change, keeps the tensor a CUDA graph may have captured)."""
        super()._apply(fn, recurse)
        if self.tables.dtype != torch.float32:
            positions = torch.arange(self.first, self.first + self.tables.shape[1], device=self.tables.device)
            self.tables = self.compute(positions)
        return self

    def compute(self, positions: Tensor) -> Tensor:
        """(3, len(positions), dim_head) float32: cos, sin and the xpos scale at these positions.

        Channel pair i is (i, i + dim_head / 2). The first rotary_dim / 2 pairs rotate, pair i at the
        frequency theta ** (-2i / rotary_dim); the others keep cos 1, sin 0 and scale 1, so they carry
        no position and match by content alone (x-transformers rotates half of each head this way).
        """
        r = self.rotary_dim
        channels = torch.arange(0, self.dim_head, 2, device=positions.device, dtype=torch.float32)  # 2i
        rotated = channels < r
        positions = positions.float()[:, None]
        freqs = positions * torch.where(rotated, self.theta ** (-channels / r), 0.0)
        # xpos: frequency i decays as ((2i + 0.4 r) / 1.4 r) ** (position / scale_base); queries are
        # multiplied by it and keys divided, so a score depends only on the distance between them.
        scale = torch.where(rotated, ((channels + 0.4 * r) / (1.4 * r)) ** (positions / self.xpos_scale_base), 1.0)
        tables = torch.stack((freqs.cos(), freqs.sin(), scale))
        return torch.cat((tables, tables), dim=-1)

    def forward(self, start: int, length: int) -> tuple[Tensor, Tensor, Tensor]:
        """(cos, sin, xpos scale), each (length, dim_head) float32, for positions start..start+length-1."""
        offset = start - self.first
        if offset >= 0 and offset + length <= self.tables.shape[1]:
            cos, sin, scale = self.tables[:, offset:offset + length]
        else:  # outside the precomputed range
            cos, sin, scale = self.compute(torch.arange(start, start + length, device=self.tables.device))
        return cos, sin, scale


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension: a 90-degree rotation of each pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(t: Tensor, cos: Tensor, sin: Tensor, scale: Tensor) -> Tensor:
    """Rotate t (..., n, d) by tables (n, d); pass scale for queries and 1/scale for keys.

    Computed in float32 with the exact tables and rounded once to t's dtype: in bf16, tables and
    products each rounded, the scores of a query and key carry about twice the rounding noise
    (as x-transformers, which rotates in float32 too)."""
    exact = t.to(torch.promote_types(t.dtype, torch.float32))
    return ((exact * cos + rotate_half(exact) * sin) * scale).to(t.dtype)
