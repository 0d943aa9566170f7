"""The recurrent state of one recurrent layer: S state vectors read and written once per block.

Per block (Hutchins et al. 2022, "skip" configuration):
  read:  the block's tokens cross-attend to the state as it was before this block (causal); the
         result is concatenated with the tokens' self-attention output before the layer's output
         projection.
  write: the state attends to itself and cross-attends to the block's keys/values; the two
         outputs are projected and gated into the new state.
The state's keys/values serve both the tokens' read and the state's self-attention; the block's
keys/values serve both token self-attention and the state's cross-attention. Queries are never
shared. Learned state position ids are added after the state's pre-norm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from einops import rearrange
from torch import Tensor, nn

from .attention import Attend
from .config import BlockRecurrentConfig


@dataclass
class StateView:
    """What a read computes from the state and the write reuses (the seed caches the same)."""

    state: Tensor   # (b, S, dim) the state before this block
    normed: Tensor  # (b, S, dim) pre-normed state plus position ids
    k: Tensor       # (b, kv_heads, S, dim_head)
    v: Tensor


class FixedGate(nn.Module):
    """s' = s * g + z * (1 - g), g = sigmoid(b) per channel: a learned moving average, g starting
    near ``retention``, or, with ``max_half_life``, at half-lives log-spaced from 1 block to it."""

    def __init__(self, dim: int, retention: float = 0.5, max_half_life: Optional[float] = None) -> None:
        super().__init__()
        # drawn either way, so that every later weight is drawn alike with or without the spread:
        # the two then compare paired at one seed
        noise = torch.randn(dim) * 0.1
        if max_half_life is None:
            bias = noise + math.log(retention / (1 - retention))
        else:
            # a channel that keeps g per block halves in h blocks when g = 2 ** (-1 / h); its logit,
            # log(g / (1 - g)) = -log(expm1(ln 2 / h)), stays exact where g is within float64's eps of 1
            half_lives = torch.logspace(0, math.log10(max_half_life), dim, dtype=torch.float64)
            bias = -torch.log(torch.expm1(math.log(2) / half_lives)).float()
        self.bias = nn.Parameter(bias)

    def forward(self, state: Tensor, update: Tensor, hidden: Optional[Tensor] = None) -> Tensor:
        """The next state from the current one and the projected update, both (b, S, dim); ``hidden``
        (what the lstm gate reads) is unused: this gate depends on its bias alone."""
        # in the state's precision (float32 under autocast, where the update is bfloat16): bfloat16
        # rounds any retention above 1 - 2 ** -8 (a half-life of 177 blocks) and turns 1 - g to 0 near 1
        g = self.bias.sigmoid().to(state.dtype)
        return state * g + update * (1 - g)


class LSTMGate(nn.Module):
    """s' = s * f + z * i, f = sigmoid(W_f h + b_f + 1), i = sigmoid(W_i h + b_i - 1): biased to remember.

    As in the official code, the gates read h, the attention outputs that the update z is projected
    from (not z), and start small: kernels truncated normal of variance 0.1 / fan_in, biases N(0, 0.1).
    """

    def __init__(self, dim_hidden: int, dim: int) -> None:
        super().__init__()
        # named apart from the gates of before 2026-11-30 (which read z): their checkpoints fail to
        # load with missing keys instead of loading into a gate that computes something else
        self.forget_gate = nn.Linear(dim_hidden, dim)
        self.input_gate = nn.Linear(dim_hidden, dim)
        # flax's variance_scaling(0.1, "fan_in", "truncated_normal"): cut at 2 std, rescaled to keep the variance
        std = math.sqrt(0.1 / dim_hidden) / 0.87962566103423978
        for linear in (self.forget_gate, self.input_gate):
            nn.init.trunc_normal_(linear.weight, std=std, a=-2 * std, b=2 * std)
            nn.init.normal_(linear.bias, std=0.1)

    def forward(self, state: Tensor, update: Tensor, hidden: Tensor) -> Tensor:
        """The next state from the current one and the projected update, both (b, S, dim), and the
        attention outputs the update was projected from, (b, S, dim_hidden)."""
        forget = torch.sigmoid(self.forget_gate(hidden) + 1)
        write = torch.sigmoid(self.input_gate(hidden) - 1)
        return state * forget + update * write


class RecurrentState(nn.Module):
    """Parameters and the read/write computations of one layer's recurrent state."""

    def __init__(self, config: BlockRecurrentConfig) -> None:
        super().__init__()
        dim, heads, dim_head, kv_heads = config.dim, config.heads, config.dim_head, config.kv_heads
        self.heads, self.kv_heads, self.dim_head = heads, kv_heads, dim_head
        num_states = config.num_state_vectors

        self.init_state = nn.Parameter(torch.randn(num_states, dim) * 0.1)
        # added after a layer norm, hence unit variance
        self.state_ids = nn.Parameter(torch.randn(num_states, dim))
        self.norm = nn.LayerNorm(dim, bias=False)

        self.to_read_q = nn.Linear(dim, heads * dim_head, bias=False)        # token queries -> state
        self.to_write_q = nn.Linear(dim, 2 * heads * dim_head, bias=False)   # state queries: self, -> tokens
        self.to_kv = nn.Linear(dim, 2 * kv_heads * dim_head, bias=False)     # state keys/values, shared
        # the maps each fused projection computes (as AttentionBlock.to_qkv's)
        self.to_write_q.output_splits = (heads * dim_head, heads * dim_head)
        self.to_kv.output_splits = (kv_heads * dim_head, kv_heads * dim_head)
        self.to_update = nn.Linear(2 * heads * dim_head, dim, bias=config.state_update_bias)

        attend = dict(qk_rmsnorm=True, qk_rmsnorm_scale=config.qk_rmsnorm_scale, use_flash_attn=config.use_flash_attn)
        self.read_attend = Attend(dim_head, **attend)
        self.self_attend = Attend(dim_head, **attend)
        self.cross_attend = Attend(dim_head, **attend)
        self.gate = (FixedGate(dim, config.fixed_gate_retention, config.fixed_gate_max_half_life)
                     if config.gate_type == "fixed"
                     else LSTMGate(2 * heads * dim_head, dim))
        self.detach_state_write_kv = config.detach_state_write_kv

    def initial(self, batch: int) -> Tensor:
        """The learned initial state for a batch, (batch, S, dim)."""
        return self.init_state.expand(batch, -1, -1)

    def view(self, state: Tensor) -> StateView:
        """Normalise the state, add its position ids and project its keys/values."""
        normed = self.norm(state) + self.state_ids.to(state.dtype)
        k, v = rearrange(self.to_kv(normed), "b s (t h d) -> t b h s d", t=2, h=self.kv_heads)
        return StateView(state, normed, k, v)

    def read(self, x_normed: Tensor, view: StateView) -> Tensor:
        """Tokens (b, n, dim), already pre-normed, attend to the state: (b, n, heads * dim_head)."""
        q = rearrange(self.to_read_q(x_normed), "b n (h d) -> b h n d", h=self.heads)
        q, k = self.read_attend.normalize(q, view.k)
        out = self.read_attend(q, k, view.v)
        return rearrange(out, "b h n d -> b n (h d)")

    def write(self, view: StateView, block_k: Tensor, block_v: Tensor) -> Tensor:
        """The next state from this block's raw keys/values (b, kv_heads, n, dim_head)."""
        if self.detach_state_write_kv:  # the write learns what to take from them, not to change them
            block_k, block_v = block_k.detach(), block_v.detach()
        q_self, q_cross = rearrange(self.to_write_q(view.normed), "b s (t h d) -> t b h s d", t=2, h=self.heads)
        q_self, k_self = self.self_attend.normalize(q_self, view.k)
        self_out = self.self_attend(q_self, k_self, view.v)
        q_cross, k_cross = self.cross_attend.normalize(q_cross, block_k)
        cross_out = self.cross_attend(q_cross, k_cross, block_v)
        hidden = rearrange(torch.cat((self_out, cross_out), dim=-1), "b h s d -> b s (h d)")
        return self.gate(view.state, self.to_update(hidden), hidden)


def check_states(states: object, config: BlockRecurrentConfig, batch: int, device: torch.device,
                 dtype: torch.dtype) -> list[Tensor]:
    """Raise a clear error unless ``states`` is one (batch, S, dim) float tensor per recurrent layer;
    return them in ``dtype`` (the states' parameters')."""
    if not isinstance(states, (list, tuple)) or not all(isinstance(s, Tensor) for s in states):
        raise TypeError(f"states must be a list of tensors (one per recurrent layer) or None, got {type(states).__name__}")
    if len(states) != len(config.recurrent_layers):
        raise ValueError(
            f"states must hold one tensor per recurrent layer {config.recurrent_layers}, got {len(states)}"
        )
    expected = (batch, config.num_state_vectors, config.dim)
    for i, s in enumerate(states):
        if tuple(s.shape) != expected:
            raise ValueError(f"states[{i}] must have shape {expected} (batch, num_state_vectors, dim), got {tuple(s.shape)}")
        if s.device != device:
            raise ValueError(f"states[{i}] is on {s.device}, the input is on {device}")
        if not s.is_floating_point():
            raise TypeError(f"states[{i}] must be a floating-point tensor, got dtype {s.dtype}")
    return [s.to(dtype) for s in states]
