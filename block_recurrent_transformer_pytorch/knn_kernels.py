"""The kNN searches as fused Triton kernels (CUDA; issue 16): ``knn_memory.search`` takes them
where they apply (``knn_memory.fused_search_fits``), so the routed search's route (a ``search``
over the group means) does too, and ``knn_memory.search_groups`` takes the member scores (below)
for each query's routed groups; they import this module (and Triton) only then.

The torch search scores every query against every slot, writes those scores out (at batch 32, a
262,144-slot store and 3,072 queries per row: 51 GB per kNN layer and segment) and reads them back
to reduce them to strided group maxima; the time goes to memory traffic, not to the matmul. Here
the group maxima come out of the matmul directly:

1. ``knn_group_maxima_kernel``: for a tile of queries and a tile of groups (group g of a row of
   ``slots`` slots holds the slots g, g + G, g + 2G, ..., G = slots / members, as in
   ``top_k.grouped_top_k``), one ``tl.dot`` per member of the groups (their keys are the
   consecutive slots j G + g of the tile: contiguous rows), a running maximum in fp32, the
   unreachable slots at -inf. Only the maxima, (b, kv_heads, m, G), are written: in q's dtype,
   as the torch path's maxima of scores in q's dtype are (rounding is monotone, so the maximum of
   rounded scores is the rounded maximum), and half the traffic of fp32 in bf16.
2. ``top_k.grouped_top_k`` keeps each query's k best groups (exact: the k best reachable
   scores lie in the k groups of highest maxima, up to ties), through the maxima's own maxima.
3. ``knn_member_scores_kernel``: each query's scores against the members of its own k groups, in
   fp32 (exact products, fp32 sums), the unreachable at -inf; then torch.topk over those k x members
   candidates gives the exact top-k (``member_top_k``).

The routed search's second stage (``knn_memory.search_groups``) scores the members of each
query's routed groups by the same kernel: group c's member j is slot chosen[c] * group_stride + j * member_stride, here
group_stride = 1 and member_stride = G (strided groups), there group_stride = KNN_ROUTE_GROUP and
member_stride = 1 (consecutive ones), so that the candidates' keys are read in place, not gathered.

Runs under Triton's interpreter (TRITON_INTERPRET=1) on CPU tensors too, which is how the kernels
are tested without a GPU (``scripts/check_knn_kernels.py``).
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from .top_k import grouped_top_k, masked_top_k

# Tile of the group maxima: BLOCK_M queries x BLOCK_G groups per program, the query tile varying
# fastest so that the programs running at once share (in L2) the keys of few group tiles. Untuned.
BLOCK_M, BLOCK_G, MAXIMA_WARPS, MAXIMA_STAGES = 128, 64, 4, 3
# Groups per program of the member scores (each program one query: no query shares a key tile).
BLOCK_K = 32


@triton.jit
def knn_group_maxima_kernel(q_ptr, keys_ptr, reachable_ptr, out_ptr, queries, groups, dim, kv_heads,
                            q_row, q_head, q_query, q_dim, k_row, k_head, k_slot, k_dim, r_row, r_slot,
                            MEMBERS: tl.constexpr, MASKED: tl.constexpr, PRECISION: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr):
    """out[b, h, i, g] = max over the members j of q[b, h, i] . keys[b, h, g + j * groups] (-inf
    where the slot is unreachable, MASKED). Programs: (query tiles x group tiles, b x kv_heads)."""
    query_tiles = tl.cdiv(queries, BLOCK_M)
    tile_m, tile_g = tl.program_id(0) % query_tiles, tl.program_id(0) // query_tiles
    row_head = tl.program_id(1).to(tl.int64)  # 64-bit offsets: a store may hold over 2**31 elements
    row, head = row_head // kv_heads, row_head % kv_heads
    offs_m = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_g = tile_g * BLOCK_G + tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, BLOCK_D)
    in_m, in_g, in_d = offs_m < queries, offs_g < groups, offs_d < dim
    q = tl.load(q_ptr + row * q_row + head * q_head + offs_m[:, None] * q_query + offs_d[None, :] * q_dim,
                mask=in_m[:, None] & in_d[None, :], other=0.0)
    keys_base = keys_ptr + row * k_row + head * k_head
    best = tl.full((BLOCK_M, BLOCK_G), float("-inf"), tl.float32)
    for j in range(MEMBERS):
        slots = offs_g + j * groups  # consecutive: the tile's keys are contiguous rows
        keys = tl.load(keys_base + slots[:, None] * k_slot + offs_d[None, :] * k_dim,
                       mask=in_g[:, None] & in_d[None, :], other=0.0)
        scores = tl.dot(q, tl.trans(keys.to(q.dtype)), input_precision=PRECISION)  # fp32 accumulation
        if MASKED:
            reach = tl.load(reachable_ptr + row * r_row + slots * r_slot, mask=in_g, other=0)
            scores = tl.where(reach[None, :] != 0, scores, float("-inf"))
        best = tl.maximum(best, scores)
    out = out_ptr + (row_head * queries + offs_m[:, None]) * groups + offs_g[None, :]
    tl.store(out, best.to(out_ptr.dtype.element_ty), mask=in_m[:, None] & in_g[None, :])


@triton.jit
def knn_member_scores_kernel(q_ptr, keys_ptr, reachable_ptr, chosen_ptr, out_ptr, queries, group_stride,
                             member_stride, kept, dim, kv_heads, q_row, q_head, q_query, q_dim, k_row, k_head, k_slot,
                             k_dim, r_row, r_slot, MEMBERS: tl.constexpr, MASKED: tl.constexpr,
                             BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    """out[b, h, i, c, j] = q[b, h, i] . keys[b, h, chosen[b, h, i, c] * group_stride + j * member_stride]
    in fp32 (-inf where the slot is unreachable, MASKED). Programs: (b x kv_heads x queries, tiles of
    the kept groups)."""
    query = tl.program_id(0).to(tl.int64)  # (row, head, query) flattened, as in chosen and out; 64-bit offsets
    row_head = query // queries
    row, head, i = row_head // kv_heads, row_head % kv_heads, query % queries
    offs_c = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_d = tl.arange(0, BLOCK_D)
    in_c, in_d = offs_c < kept, offs_d < dim
    q = tl.load(q_ptr + row * q_row + head * q_head + i * q_query + offs_d * q_dim, mask=in_d, other=0.0)
    chosen = tl.load(chosen_ptr + query * kept + offs_c, mask=in_c, other=0)
    keys_base = keys_ptr + row * k_row + head * k_head
    out = out_ptr + (query * kept + offs_c) * MEMBERS
    for j in range(MEMBERS):
        slots = chosen * group_stride + j * member_stride
        keys = tl.load(keys_base + slots[:, None] * k_slot + offs_d[None, :] * k_dim,
                       mask=in_c[:, None] & in_d[None, :], other=0.0)
        # keys cast to q's dtype first, as the torch path's keys.to(q.dtype); products exact in fp32
        scores = tl.sum(keys.to(q.dtype).to(tl.float32) * q.to(tl.float32)[None, :], axis=1)
        if MASKED:
            reach = tl.load(reachable_ptr + row * r_row + slots * r_slot, mask=in_c, other=0)
            scores = tl.where(reach != 0, scores, float("-inf"))
        tl.store(out + j, scores, mask=in_c)


def _launch_args(q: Tensor, keys: Tensor, reachable: Optional[Tensor]) -> tuple[Tensor, tuple[int, ...], int]:
    """What both kernels take of the search's tensors: the reachable flags as bytes (Triton's bool
    loads are no plainer), the strides of q, keys and the flags, and the padded head dim (a power of
    2, at least 16 for tl.dot). Without a mask the keys stand in for the flags' pointer (never read)."""
    flags = keys if reachable is None else reachable.view(torch.uint8)
    strides = (*q.stride(), *keys.stride(), *(flags.stride() if reachable is not None else (0, 0)))
    return flags, strides, max(16, triton.next_power_of_2(q.shape[-1]))


def group_maxima(q: Tensor, keys: Tensor, reachable: Optional[Tensor], members: int) -> Tensor:
    """Each query's maximum score over each strided group of slots: q (b, kv_heads, m, d), keys (b,
    kv_heads, slots, d) with slots a multiple of ``members``, reachable (b, slots) bool or None (every
    slot reachable). Returns (b, kv_heads, m, slots / members) in q's dtype; -inf for a group of no
    reachable slot."""
    b, kv_heads, m, d = q.shape
    groups = keys.shape[-2] // members
    out = torch.empty(b, kv_heads, m, groups, device=q.device, dtype=q.dtype)
    flags, strides, block_d = _launch_args(q, keys, reachable)
    # fp32 queries: TF32 where torch's fp32 matmuls may use it, else exact as theirs are
    precision = "ieee" if q.dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest" else "tf32"
    grid = (triton.cdiv(m, BLOCK_M) * triton.cdiv(groups, BLOCK_G), b * kv_heads)
    knn_group_maxima_kernel[grid](q, keys, flags, out, m, groups, d, kv_heads, *strides, MEMBERS=members,
                                  MASKED=reachable is not None, PRECISION=precision, BLOCK_M=BLOCK_M,
                                  BLOCK_G=BLOCK_G, BLOCK_D=block_d, num_warps=MAXIMA_WARPS, num_stages=MAXIMA_STAGES)
    return out


def member_scores(q: Tensor, keys: Tensor, reachable: Optional[Tensor], chosen: Tensor, members: int,
                  group_stride: int, member_stride: int) -> Tensor:
    """Each query's fp32 scores against the members of its ``chosen`` groups (b, kv_heads, m, kept):
    (b, kv_heads, m, kept * members), group c's member j (slot chosen[c] * group_stride + j *
    member_stride) at c * members + j; -inf where unreachable. q, keys and reachable as
    ``group_maxima``'s; the slots must lie within keys."""
    b, kv_heads, m, d = q.shape
    kept = chosen.shape[-1]
    out = torch.empty(b, kv_heads, m, kept * members, device=q.device, dtype=torch.float32)
    flags, strides, block_d = _launch_args(q, keys, reachable)
    grid = (b * kv_heads * m, triton.cdiv(kept, BLOCK_K))
    knn_member_scores_kernel[grid](q, keys, flags, chosen.contiguous(), out, m, group_stride, member_stride, kept, d,
                                   kv_heads, *strides, MEMBERS=members, MASKED=reachable is not None,
                                   BLOCK_K=BLOCK_K, BLOCK_D=block_d)
    return out


def member_top_k(q: Tensor, keys: Tensor, reachable: Optional[Tensor], chosen: Tensor, k: int, members: int,
                 group_stride: int, member_stride: int) -> tuple[Tensor, Tensor]:
    """The top k of ``member_scores`` (same arguments): (scores (b, kv_heads, m, k) fp32, -inf where
    fewer than k of the candidates are reachable, or fewer than k candidates; their slots)."""
    best, order = masked_top_k(member_scores(q, keys, reachable, chosen, members, group_stride, member_stride),
                               None, k)
    return best, chosen.gather(-1, order // members) * group_stride + order % members * member_stride


def fused_top_k(q: Tensor, keys: Tensor, reachable: Optional[Tensor], k: int, members: int) -> tuple[Tensor, Tensor]:
    """``top_k.grouped_top_k`` of q's scores against keys (the unreachable slots masked) without
    the scores: the group maxima, the k best groups, the top k of their members' scores. Arguments
    as ``group_maxima``'s, at least 4k groups (``knn_memory.fused_search_fits``). Returns (scores
    (b, kv_heads, m, k) fp32, -inf where fewer than k slots are reachable; their slots)."""
    groups = keys.shape[-2] // members
    if keys.shape[-2] % members or groups < k:  # fewer groups than k: padded with group 0, read twice
        raise ValueError(f"fused_top_k needs a whole number of groups of {members} slots, at least k={k} of them, "
                         f"got {keys.shape[-2]} slots (knn_memory.fused_search_fits says where it pays)")
    if q.numel() == 0:  # no query (or row): no program to launch
        return q.new_empty(*q.shape[:3], k, dtype=torch.float32), q.new_empty(*q.shape[:3], k, dtype=torch.long)
    chosen = grouped_top_k(group_maxima(q, keys, reachable, members), None, k, members)[1]
    return member_top_k(q, keys, reachable, chosen, k, members, 1, groups)  # strided groups: g, g + G, ...
