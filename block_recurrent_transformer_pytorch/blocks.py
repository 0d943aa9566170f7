"""One transformer layer: pre-norm attention over [memories | block] (+ state reads), then a GEGLU (or GELU) FFN."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .attention import Attend, Mask, attention_with_logsumexp
from .config import BlockRecurrentConfig, feedforward_width
from .knn_memory import KNNStore, joint_softmax, recall, routed_recall
from .positions import apply_rotary


class FeedForward(nn.Module):
    """Pre-norm feed-forward: GEGLU with hidden width 2/3 * mult * dim (the seed's), or with glu=False
    GELU with hidden width mult * dim (x-transformers' default kind). Both have about 2 * mult * dim ** 2
    weights (see feedforward_width)."""

    def __init__(self, dim: int, mult: float, glu: bool = True, zero_init_output: bool = False) -> None:
        super().__init__()
        self.glu = glu
        self.hidden = feedforward_width(dim, mult, glu)
        # Matmul operands whose rows are a multiple of 8 elements (16 bytes in bf16) run on the fast
        # tensor-core kernels; the seed's width (1365 at dim 512) sends every GEGLU matmul to slow
        # unaligned ones. The weights are zero-padded in the forward to this width: the extra hidden
        # units are exactly 0 and change nothing, and the parameters keep the seed's shapes.
        self.padded = -(-self.hidden // 8) * 8
        self.inputs = 2 if glu else 1  # GEGLU's input projection makes a value and a gate per hidden unit
        self.norm = nn.LayerNorm(dim, bias=False)
        self.proj_in = nn.Linear(dim, self.hidden * self.inputs, bias=False)
        self.proj_out = nn.Linear(self.hidden, dim, bias=False)
        if zero_init_output:  # after torch's draw, so that the other weights keep theirs
            nn.init.zeros_(self.proj_out.weight)

    def forward(self, x: Tensor) -> Tensor:
        """(b, n, dim) -> (b, n, dim), the residual branch."""
        w_in, w_out = self.proj_in.weight, self.proj_out.weight
        pad = self.padded - self.hidden
        if pad:
            w_in = F.pad(w_in.reshape(self.inputs, self.hidden, -1), (0, 0, 0, pad))
            w_in = w_in.reshape(self.inputs * self.padded, -1)
            w_out = F.pad(w_out, (0, pad))
        hidden = F.linear(self.norm(x), w_in)
        if self.glu:
            value, gate = hidden.chunk(2, dim=-1)
            hidden = value * F.gelu(gate)
        else:
            hidden = F.gelu(hidden)
        return F.linear(hidden, w_out)


def make_router(dim_head: int) -> nn.Module:
    """CoLT5's coordinate-descent router over unit keys (the optional colt5-attention package)."""
    try:
        from colt5_attention import CoordinateDescentRouter
    except ImportError as error:
        raise ImportError('knn_retrieval="routed" needs colt5-attention: '
                          'pip install "block-recurrent-transformer-pytorch[routed]"') from error
    return CoordinateDescentRouter(dim_head, straight_through=True, cosine_sim_routing=True)


class AttentionBlock(nn.Module):
    """Causal multi-head attention of a block's tokens over its memories and itself.

    Keys/values come from ``kv_heads`` shared heads (one in the seed). ``num_state_reads`` is how
    many recurrent states this layer reads; their outputs widen the output projection's input.
    """

    def __init__(self, config: BlockRecurrentConfig, *, qk_rmsnorm: bool, num_state_reads: int, knn: bool = False,
                 mixes_first_values: bool = False) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.dim_head = config.heads, config.kv_heads, config.dim_head
        inner = config.heads * config.dim_head
        self.norm = nn.LayerNorm(config.dim, bias=False)
        # one fused projection for queries, keys and values; output_splits names the maps its rows compute,
        # for an optimizer that treats each map's matrix as a whole (train.py's Muon, by default)
        kv_inner = config.kv_heads * config.dim_head
        self.to_qkv = nn.Linear(config.dim, inner + 2 * kv_inner, bias=False)
        self.to_qkv.output_splits = (inner, kv_inner, kv_inner)
        self.attend = Attend(config.dim_head, qk_rmsnorm=qk_rmsnorm, qk_rmsnorm_scale=config.qk_rmsnorm_scale,
                             use_flash_attn=config.use_flash_attn)
        self.to_out = nn.Linear(inner * (1 + num_state_reads), config.dim, bias=False)
        if config.plain_output_init and num_state_reads:
            # torch drew U(+-1/sqrt(fan_in)) over all the inputs; scaled to one input's fan-in rather than
            # drawn again, so that every other weight keeps its draw (a paired comparison at one seed)
            with torch.no_grad():
                self.to_out.weight.mul_(math.sqrt(1 + num_state_reads))
        if config.zero_init_state_reads:
            nn.init.zeros_(self.to_out.weight[:, inner:])
        if config.zero_init_output_projections:
            nn.init.zeros_(self.to_out.weight)
        # value_residual, in every layer but the first: (a, b) of v = a * v + b * v_first
        self.value_mix = nn.Parameter(torch.full((2,), 0.5)) if mixes_first_values else None
        # attention_gate: each head's output times 2 * sigmoid(head_gate[h] . x_normed), a gate of 1 at the start
        self.head_gate = nn.Parameter(torch.zeros(config.heads, config.dim)) if config.attention_gate else None
        self.token_shift = config.token_shift
        self.knn_top_k = config.knn_top_k
        # groups of the store each query routes itself to (query_routed), None: the exact search
        self.route_groups = config.knn_route_groups if config.knn_retrieval == "query_routed" else None
        self.router = make_router(config.dim_head) if knn and config.knn_retrieval == "routed" else None
        if knn and config.knn_backend == "faiss":
            from .faiss_memory import require_faiss  # fail at construction, not at the first store

            require_faiss()

    def project(self, x: Tensor, previous: Optional[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Pre-norm x (b, n, dim) and project: (x_normed, q (b, h, n, d), raw k, raw v (b, kv_heads, n, d)).
        previous (b, 1, dim): the layer input of the token before x's first (token_shift; None: x
        starts a block)."""
        x_normed = self.norm(x)
        shifted = self.shift(x_normed, None if previous is None else self.norm(previous))
        q, kv = self.to_qkv(shifted).split((self.heads * self.dim_head, 2 * self.kv_heads * self.dim_head), dim=-1)
        q = rearrange(q, "b n (h d) -> b h n d", h=self.heads)
        return (x_normed, q, *self._split_kv(kv))

    def project_kv(self, x_normed: Tensor, block_width: int) -> tuple[Tensor, Tensor]:
        """Raw k, v (b, kv_heads, n, d) of already normed inputs (b, n, dim) of whole blocks of
        block_width: ``project``'s keys/values by the key/value rows of ``to_qkv`` alone
        (memory_kv_from_inputs: the memory's, afresh)."""
        if self.token_shift:  # each block shifted on its own, as it was when it ran
            blocks = self.shift(x_normed.unflatten(1, (-1, block_width)).flatten(0, 1), None)
            x_normed = blocks.unflatten(0, (x_normed.shape[0], -1)).flatten(1, 2)
        return self._split_kv(F.linear(x_normed, self.to_qkv.weight[self.heads * self.dim_head:]))

    def mix_values(self, v: Tensor, first: Optional[Tensor]) -> Tensor:
        """value_residual: this layer's values v mixed with the first layer's values of the same
        tokens, first (both (b, kv_heads, n, d)); v unchanged in a layer that mixes none."""
        if self.value_mix is None:
            return v
        a, b = self.value_mix  # 0-dim: their float32 leaves v's bf16 as it is
        return a * v + b * first

    def shift(self, x_normed: Tensor, previous_normed: Optional[Tensor]) -> Tensor:
        """With token_shift, x_normed (b, n, dim) with its second half of channels taken from the token
        before: previous_normed (b, 1, dim) for the first, zeros if None (a block's start). Else x_normed."""
        if not self.token_shift:
            return x_normed
        half = x_normed.shape[-1] // 2
        late = x_normed[..., half:]
        before = late.new_zeros(late.shape[0], 1, late.shape[-1]) if previous_normed is None \
            else previous_normed[..., half:].to(late.dtype)
        # one place later along the sequence; the last token's channels are nobody's
        return torch.cat((x_normed[..., :half], torch.cat((before, late), dim=1)[:, :-1]), dim=-1)

    def _split_kv(self, kv: Tensor) -> tuple[Tensor, Tensor]:
        """(b, n, 2 * kv_heads * d) projections -> k, v (b, kv_heads, n, d)."""
        k, v = rearrange(kv, "b n (t h d) -> t b h n d", t=2, h=self.kv_heads)
        return k, v

    def position(self, q: Tensor, k: Tensor, rotary: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """qk-norm then rotary/xpos for queries and keys of the same tokens (tables cover them)."""
        q, k = self.attend.normalize(q, k)
        cos, sin, scale = rotary
        return apply_rotary(q, cos, sin, scale), apply_rotary(k, cos, sin, scale.reciprocal())

    def position_keys(self, k: Tensor, rotary: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        """qk-norm then rotary/xpos for keys alone (the memories)."""
        if self.attend.qk_norm is not None:
            k = self.attend.qk_norm.normalize_keys(k)
        cos, sin, scale = rotary
        return apply_rotary(k, cos, sin, scale.reciprocal())

    def attend_block(self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool, mask: Optional[Mask]) -> Tensor:
        """Positioned queries over positioned keys (causal: aligned lower-right): (b, n, heads * d)."""
        out = self.attend(q, k, v, causal=causal, mask=mask)
        return rearrange(out, "b h n d -> b n (h d)")

    def attend_with_memory(self, q_raw: Tensor, q: Tensor, keys: Tensor, values: Tensor, store: KNNStore,
                           index: int, *, causal: bool, mask: Optional[Mask]) -> Tensor:
        """A kNN layer's attention: over its local keys and the kNN store's entries (layer ``index``
        of it) under one softmax (``joint_softmax``), (b, n, heads * d). The positioned queries q
        attend the positioned local ``keys``/``values`` (causal, mask as ``attend_block``); the raw
        queries q_raw (b, h, n, d) their retrieved entries (scored without positions: the store
        holds bare unit keys). A query that finds no valid entry gets its local attention alone."""
        query = self.attend.qk_norm.query_for_unit_keys(q_raw)
        if self.router is None:
            memory, memory_lse = recall(query, store, index, self.knn_top_k, self.attend.scale, self.route_groups)
        else:  # the torch store only (the config refuses routed retrieval from the faiss store)
            memory, memory_lse = routed_recall(query, store, index, self.knn_top_k, self.attend.scale, self.router)
        # the local attention written out (fp32), as it must give its softmax's normaliser (the flash
        # kernel does not return it)
        local, local_lse = attention_with_logsumexp(q, keys, values, causal=causal, scale=self.attend.scale, mask=mask)
        mixed = joint_softmax(local.to(q.dtype), local_lse, memory.to(q.dtype), memory_lse)
        return rearrange(mixed, "b h n d -> b n (h d)")

    def output(self, attn_out: Tensor, state_reads: list[Tensor], x_normed: Tensor) -> Tensor:
        """The attention output (b, n, heads * d), each head gated by the normed input x_normed (b, n, dim)
        (attention_gate), with the state reads concatenated, projected back to dim."""
        if self.head_gate is not None:
            gate = 2 * torch.sigmoid(F.linear(x_normed, self.head_gate)).to(attn_out.dtype)  # (b, n, heads)
            heads = attn_out.unflatten(-1, (self.heads, self.dim_head))
            attn_out = (heads * gate.unsqueeze(-1)).flatten(-2)
        return self.to_out(torch.cat((attn_out, *state_reads), dim=-1) if state_reads else attn_out)
