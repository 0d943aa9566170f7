"""Rotary position embedding with xpos length-extrapolation scaling (Sun et al. 2022).

Positions are relative to the current block: the block's tokens sit at 0..n-1 and its memories
(compressed then XL, oldest first) at -M..-1. Every key keeps the same position for as long as the
block lasts, so cached generation can rotate a key once, when it is written.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RotaryEmbedding(nn.Module):
    """cos/sin tables and xpos scales for any integer positions."""

    def __init__(self, dim_head: int, theta: float = 10000.0, xpos_scale_base: int = 512) -> None:
        super().__init__()
        self.dim_head, self.theta, self.xpos_scale_base = dim_head, theta, xpos_scale_base

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return (cos, sin, xpos scale), each (len(positions), dim_head), in float32.

        The frequencies are computed here in float32 rather than kept as buffers, which
        ``model.half()`` or ``.bfloat16()`` would round (0.45 rad of phase error at distance 1024).
        """
        d = self.dim_head
        channels = torch.arange(0, d, 2, device=positions.device, dtype=torch.float32)
        positions = positions.float()[:, None]
        freqs = positions * self.theta ** (-channels / d)
        freqs = torch.cat((freqs, freqs), dim=-1)
        # xpos: frequency i decays as ((2i + 0.4 d) / 1.4 d) ** (position / scale_base); queries are
        # multiplied by it and keys divided, so a score depends only on the distance between them.
        scale = ((channels + 0.4 * d) / (1.4 * d)) ** (positions / self.xpos_scale_base)
        scale = torch.cat((scale, scale), dim=-1)
        return freqs.cos(), freqs.sin(), scale


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension: a 90-degree rotation of each pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(t: Tensor, cos: Tensor, sin: Tensor, scale: Tensor) -> Tensor:
    """Rotate t (..., n, d) by tables (n, d); pass scale for queries and 1/scale for keys."""
    cos, sin, scale = (x.to(t.dtype) for x in (cos, sin, scale))
    return (t * cos + rotate_half(t) * sin) * scale
