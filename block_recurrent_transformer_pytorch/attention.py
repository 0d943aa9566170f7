"""The attention kernel: scaled dot-product attention through torch SDPA, or a plain reference.

Queries have ``heads`` heads; keys and values may have fewer (``kv_heads``, grouped-query
attention; the seed uses a single shared key/value head). Causal attention is aligned to the
lower right: query i of n attends to keys 0..m-n+i of m, so a block's queries see all of its
memories and the block up to themselves. On CUDA with fp16/bf16 and no mask this runs the
flash kernel with no mask tensor, over the n x m band only. After a per-row reset of memories
that leaves each row the newest few of its memories' blocks (``MemoryRows``: all or none where the
XL memory holds one block), one call of the flash kernel's variable-length form gives each row
its own keys. Any other mask (compressed memories partly reset, a static decoding cache)
goes to the memory-efficient kernel. SDPA's cuDNN backend is never
used (see ``sdpa_backends``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

# The SDPA backends our calls may use, each with the switch that says whether the caller enabled it.
# cuDNN's is left out: on an H200 (torch 2.11) SDPA handed it calls of a kNN model's training step
# that its backward then failed at batch >= 64 ("mha_graph.execute ... is_good()", issue 12), and in
# decoding it builds a new execution plan for every mask and shape. Flash and memory-efficient serve
# every call we make.
_BACKENDS = (
    (SDPBackend.FLASH_ATTENTION, torch.backends.cuda.flash_sdp_enabled),
    (SDPBackend.EFFICIENT_ATTENTION, torch.backends.cuda.mem_efficient_sdp_enabled),
    (SDPBackend.MATH, torch.backends.cuda.math_sdp_enabled),
)


@dataclass(frozen=True)
class MemoryRows:
    """How many of the newest memory entries each row of a batch sees: the mask of a block after some
    rows started a new document, when the memories (XL blocks, no compressed memories) hold whole
    blocks of it or of the document before. The memories are the first m - n of the m keys; every
    row sees the block's own keys. ``visible`` is at most m - n."""

    visible: Tensor  # (b,) long: entries of the memories each row sees, the newest ones

    def mask(self, n: int, m: int) -> Tensor:
        """The same as a boolean mask (b, 1, 1, m) over the keys."""
        return (torch.arange(m, device=self.visible.device) >= m - n - self.visible[:, None])[:, None, None, :]


Mask = Union[Tensor, MemoryRows]


def sdpa_backends() -> list[SDPBackend]:
    """The SDPA backends the caller has enabled (``torch.nn.attention.sdpa_kernel``), less cuDNN's.

    While torch.compile traces, the switches cannot be read (they are not tensors): the three
    backends are named as they are, so a caller's restriction does not reach compiled code, which
    keeps the kernel chosen at trace time.
    """
    if torch.compiler.is_compiling():
        return [backend for backend, _ in _BACKENDS]
    backends = [backend for backend, enabled in _BACKENDS if enabled()]
    if not backends:
        raise RuntimeError("the SDPA backends enabled (torch.nn.attention.sdpa_kernel) leave our attention none to "
                           "run on: it uses flash, memory-efficient or math, never cuDNN's (see attention.py)")
    return backends


def reference_attention(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, scale: float,
                        mask: Optional[Mask] = None) -> Tensor:
    """Softmax attention written out: the definition the SDPA path is tested against.

    q (b, h, n, d); k, v (b, kv_heads, m, d); mask broadcastable to (b, 1, n, m), True where a
    query may attend a key (applied on top of ``causal``), or ``MemoryRows``.
    """
    return _written_out(q, k, v, causal, scale, mask, with_logsumexp=False)[0]


def attention_with_logsumexp(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, scale: float,
                             mask: Optional[Mask] = None) -> tuple[Tensor, Tensor]:
    """``reference_attention``'s output, and the logsumexp (b, h, n, 1) of the scores it normalised
    (the keys a query may not attend set to the dtype's lowest value): what merging this
    attention with another one under a single softmax needs (``knn_memory.joint_softmax``).
    Both in float32 at least (see ``_written_out_fp32``): bf16 scores would put ~1% of error in
    the merge's weights."""
    return _written_out_fp32(q, k, v, causal, scale, mask, with_logsumexp=True)


def _written_out_fp32(q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float, mask: Optional[Mask],
                      with_logsumexp: bool) -> tuple[Tensor, Optional[Tensor]]:
    """``_written_out`` in float32 at least (fp64 stays fp64), as a kernel scores; autocast off, or
    it would cast the operands back to its dtype."""
    dtype = torch.promote_types(q.dtype, torch.float32)
    with torch.autocast(q.device.type, enabled=False):
        return _written_out(q.to(dtype), k.to(dtype), v.to(dtype), causal, scale, mask, with_logsumexp)


def _written_out(q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float, mask: Optional[Mask],
                 with_logsumexp: bool) -> tuple[Tensor, Optional[Tensor]]:
    b, h, n, d = q.shape
    groups = h // k.shape[1]
    scores = fold_query_groups(q, k.shape[1]) @ k.transpose(-1, -2) * scale  # (b, kv_heads, groups * n, m)
    allowed = _fold_mask(_allowed(n, k.shape[-2], causal, mask, q.device), n, groups)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    out = (scores.softmax(dim=-1) @ v).reshape(b, h, n, d)
    return out, scores.logsumexp(dim=-1, keepdim=True).reshape(b, h, n, 1) if with_logsumexp else None


def sdpa_attention(q: Tensor, k: Tensor, v: Tensor, *, causal: bool, scale: float,
                   mask: Optional[Mask] = None) -> Tensor:
    """The same function through F.scaled_dot_product_attention (flash kernel where it can run; on
    CUDA only among ``sdpa_backends()``)."""
    if not q.is_cuda:
        return _sdpa_attention(q, k, v, causal, scale, mask, flash=False)
    backends = sdpa_backends()
    with sdpa_kernel(backends):
        return _sdpa_attention(q, k, v, causal, scale, mask, flash=SDPBackend.FLASH_ATTENTION in backends)


def _sdpa_attention(q: Tensor, k: Tensor, v: Tensor, causal: bool, scale: float, mask: Optional[Mask],
                    flash: bool) -> Tensor:
    gqa = q.shape[1] != k.shape[1]
    n, m = q.shape[-2], k.shape[-2]
    if isinstance(mask, MemoryRows) and m == n:  # no memories to hide
        mask = None
    if isinstance(mask, MemoryRows):
        # One query (decoding's first token of a block, a block of one token): the mask below, written out.
        # The variable-length kernel is not asked: with one query and grouped key/value heads, torch
        # 2.11's flash folds each group's query heads into queries, which assumes every sequence holds
        # one query, and fails on the query-less sequences here.
        operands = _flash_operands(q, k, v) if causal and flash and n > 1 else None
        if operands is None:
            mask = mask.mask(n, m)
        else:
            return _memory_rows_flash(*operands, mask.visible, scale)
    if mask is not None:
        if n == 1:
            # Decoding's one query over a static cache. The masked kernels split the work by query
            # rows only, so a row's 1,536 keys run on one thread block (60 us per call on an H200,
            # over half of a decoding step); written out it is a few short kernels.
            return _written_out_fp32(q, k, v, causal, scale, mask, with_logsumexp=False)[0].to(q.dtype)
        mask = _allowed(n, m, causal, mask, q.device)
        if not gqa:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        # Of the kernels that take a mask only math takes grouped heads, in fp32 and with a copy of
        # k/v per query head: fold the heads into the query rows instead (see fold_query_groups), for
        # the memory-efficient kernel.
        out = F.scaled_dot_product_attention(fold_query_groups(q, k.shape[1]), k, v, scale=scale,
                                             attn_mask=_fold_mask(mask, n, q.shape[1] // k.shape[1]))
        return out.reshape(q.shape)
    if not causal or n == 1:  # every key is visible
        return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=gqa)
    operands = _flash_operands(q, k, v) if flash else None
    if operands is not None:
        return _lower_right_flash(*operands, scale)
    # Elsewhere left-pad the queries to m, so that the causal mask is square (top-left ==
    # lower-right), and keep the last n outputs: no mask tensor, but m - n rows more to score.
    q = F.pad(q, (0, 0, m - n, 0))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    return out[..., m - n:, :]


def _lower_right_flash(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """Causal attention aligned lower right by the flash kernel (operands from ``_flash_operands``).

    SDPA's is_causal aligns top-left, so SDPA refuses flash for it when n != m; the flash kernel's
    own causal mask is aligned lower right, as ours. Called directly it scores the n x m band alone
    (torch.nn.attention.bias.causal_lower_right does the same, but torch.compile does not trace it).
    It takes grouped key/value heads as they are."""
    return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, True, False, scale=scale)[0]


def _memory_rows_flash(q: Tensor, k: Tensor, v: Tensor, visible: Tensor, scale: float) -> Tensor:
    """Causal attention aligned lower right in which row r sees only the newest ``visible[r]`` of the
    m - n memory entries (operands from ``_flash_operands``): one call of the flash kernel's
    variable-length form, whatever the rows see.

    Each row is two sequences of that call, its keys left where they are: first the entries it may
    not see, with no queries (so they get no gradient), then its n queries over the rest, the
    causal mask aligned lower right per sequence. At the preset's shape with half the rows reset it
    took 0.82 ms forward + backward on an H200 where the two flash calls it replaced (with the
    memories and without, selected per row) took 1.53 and the band without resets 0.92; at the seed
    config's shorter blocks, 0.90 against 0.84 (bench/RESULTS.md, thirtieth session)."""
    b, heads, n, d = q.shape
    m = k.shape[2]
    row_starts = torch.arange(b, device=q.device) * m
    hidden = (m - n - visible).clamp(min=0)  # (b,) entries each row may not see
    cum_keys = torch.stack((row_starts, row_starts + hidden), dim=1).flatten()
    cum_keys = F.pad(cum_keys, (0, 1), value=b * m).to(torch.int32)  # (2b + 1,)
    cum_queries = (torch.arange(2 * b + 1, device=q.device, dtype=torch.int32) // 2) * n  # 0, 0, n, n, 2n, ...
    out = _varlen_lower_right_flash(_tokens_first(q), _tokens_first(k), _tokens_first(v), cum_queries, cum_keys,
                                    n, m, scale)
    return out.view(b, n, heads, d).transpose(1, 2)


def _tokens_first(t: Tensor) -> Tensor:
    """(b, heads, length, d) -> (b * length, heads, d): the variable-length kernel's layout. A view
    where t's memory is token-major (the queries, as the projection wrote them), else a copy (the
    keys/values, concatenated along the length per head)."""
    b, heads, length, d = t.shape
    return t.transpose(1, 2).reshape(b * length, heads, d)


def _varlen_lower_right_flash(q: Tensor, k: Tensor, v: Tensor, cum_queries: Tensor, cum_keys: Tensor,
                              max_queries: int, max_keys: int, scale: float) -> Tensor:
    """The flash kernel over sequences packed along the first dimension (q (total_q, heads, d), k/v
    (total_k, kv_heads, d)), sequence i being rows cum[i]:cum[i + 1] of each; causal aligned lower right
    in every sequence. Grouped key/value heads go in as they are; torch.compile traces the call."""
    return torch.ops.aten._flash_attention_forward(q, k, v, cum_queries, cum_keys, max_queries, max_keys, 0.0, True,
                                                   False, scale=scale)[0]


def _flash_operands(q: Tensor, k: Tensor, v: Tensor) -> Optional[tuple[Tensor, Tensor, Tensor]]:
    """q, k, v as the flash kernel takes them, or None where it does not run them.

    The kernel needs a head size that is a multiple of 8 up to what the GPU trains
    (``_flash_head_size_limit``), whole groups of query heads, last dimensions contiguous and
    fp16/bf16 alike. Autocast casts SDPA's operands but not a direct call of an aten kernel, so they
    are cast here as it would: every floating dtype but float64 to its lower-precision dtype."""
    head_size = q.shape[-1]
    if (head_size % 8 or head_size > _flash_head_size_limit(q.device) or v.shape[-1] != head_size
            or q.shape[1] % k.shape[1]):
        return None
    if torch.is_autocast_enabled(q.device.type):
        dtype = torch.get_autocast_dtype(q.device.type)
        q, k, v = (t if t.dtype == torch.float64 else t.to(dtype) for t in (q, k, v))
    if q.dtype in (torch.float16, torch.bfloat16) and k.dtype == q.dtype == v.dtype and all(
            t.stride(-1) == 1 for t in (q, k, v)):
        return q, k, v
    return None


@torch.compiler.assume_constant_result
def _flash_head_size_limit(device: torch.device) -> int:
    """The largest head size this torch's flash kernel trains on the device; 0 where it does not run.

    CUDA with flash built in, on Ampere or newer (the kernel refuses older GPUs). 256 on sm80 and
    sm90; 192 on every other GPU, a deliberate bound for those not measured here (SDPA's own rules
    stop the backward at 192 on sm86-89). ROCm is left to SDPA (its kernels' causal alignment is not
    verified here). A constant of the device, so that torch.compile evaluates it once when it
    traces, outside the graph."""
    if device.type != "cuda" or torch.version.hip is not None or not torch.backends.cuda.is_flash_attention_available():
        return 0
    capability = torch.cuda.get_device_capability(device)
    if capability < (8, 0):
        return 0
    return 256 if capability in ((8, 0), (9, 0)) else 192


def fold_query_groups(q: Tensor, kv_heads: int) -> Tensor:
    """(b, h, n, d) -> (b, kv_heads, h // kv_heads * n, d): the query heads that share a key/value
    head are more queries over the same keys, as rows ordered (head in group, query). This moves
    the queries (a view if q is contiguous), where repeating k/v per query head would copy the keys."""
    b, h, n, d = q.shape
    return q.reshape(b, kv_heads, h // kv_heads * n, d)


def _fold_mask(mask: Optional[Tensor], n: int, groups: int) -> Optional[Tensor]:
    """A mask over (n, m) queries x keys for the rows of ``fold_query_groups``: each query's row once per
    head of its group (a single query's row broadcasts as it is)."""
    if mask is None or n == 1:
        return mask
    return mask.expand(*mask.shape[:-2], n, mask.shape[-1]).repeat(*(1,) * (mask.ndim - 2), groups, 1)


def _allowed(n: int, m: int, causal: bool, mask: Optional[Mask], device: torch.device) -> Optional[Tensor]:
    """Boolean mask of the keys each query may attend (lower-right causal and ``mask``), or None for all."""
    if isinstance(mask, MemoryRows):
        mask = mask.mask(n, m)
    if not causal:
        return mask
    allowed = torch.ones(n, m, dtype=torch.bool, device=device).tril(m - n)
    return allowed if mask is None else allowed & mask


class QKNorm(nn.Module):
    """qk-rmsnorm: unit-normalise queries and keys, learned per-dimension gains, fixed temperature."""

    def __init__(self, dim_head: int, scale: float) -> None:
        super().__init__()
        self.q_gain = nn.Parameter(torch.ones(dim_head))
        self.k_gain = nn.Parameter(torch.ones(dim_head))
        self.scale = scale

    @staticmethod
    def _unit(t: Tensor, gain: Tensor) -> Tensor:
        # autocast runs the norm in fp32; return the input's dtype
        return (F.normalize(t, dim=-1) * gain).to(t.dtype)

    def query_for_unit_keys(self, q: Tensor) -> Tensor:
        """The query scored against bare unit keys (the kNN store): both gains folded into it."""
        return (F.normalize(q, dim=-1) * self.q_gain * self.k_gain).to(q.dtype)

    def normalize_keys(self, k: Tensor) -> Tensor:
        """Unit keys times their gains."""
        return self._unit(k, self.k_gain)

    def forward(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """Unit queries and keys times their gains."""
        return self._unit(q, self.q_gain), self._unit(k, self.k_gain)


class Attend(nn.Module):
    """Optional qk-norm, then attention by the chosen kernel. Holds no projections."""

    def __init__(self, dim_head: int, *, qk_rmsnorm: bool, qk_rmsnorm_scale: float, use_flash_attn: bool) -> None:
        super().__init__()
        self.qk_norm = QKNorm(dim_head, qk_rmsnorm_scale) if qk_rmsnorm else None
        self.scale = qk_rmsnorm_scale if qk_rmsnorm else dim_head ** -0.5
        self.kernel = sdpa_attention if use_flash_attn else reference_attention

    def normalize(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """Apply qk-norm (identity when off); done before rotary positions."""
        return self.qk_norm(q, k) if self.qk_norm is not None else (q, k)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False,
                mask: Optional[Mask] = None) -> Tensor:
        """Attend q over k/v that are already normalised (see ``normalize``) and positioned."""
        return self.kernel(q, k, v, causal=causal, scale=self.scale, mask=mask)
