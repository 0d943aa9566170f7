"""kNN memory (Memorizing Transformers, Wu et al. 2022): keys/values far beyond the XL and
compressed memories, searched exactly by each query — or, with ``knn_retrieval="routed"``, a
subset picked per block by a learned CoLT5 coordinate-descent router (Ainslie et al. 2023).

Every kNN layer keeps, per batch row, a FIFO ring of ``knn_memory_size`` past keys/values: each
block pushed out of the XL memory is written over the oldest entries (never a wholesale wipe).
Keys are stored as unit vectors without positions, so a query finds them by cosine similarity;
the search is exact (chunked top-k over the whole store, in torch, on the store's device).
Entries are stored detached. A row that resets marks its entries invalid.

Two stores implement ``KNNStore``: ``KNNMemory`` here (``knn_backend="torch"``, tensors on the
model's device, compilable) and ``faiss_memory.FaissKNNMemory`` (``knn_backend="faiss"``, on the
CPU, eager only). A store retrieves each query's top-k entries; the attention over them
(``recall``) is shared, and ``joint_softmax`` merges it with the layer's local attention as one
softmax over both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import fold_query_groups
from .config import BlockRecurrentConfig

# Scores computed at once (a chunk of the store for all queries): bounds the temporaries of a search.
# Large on a GPU, where small chunks would make a search of a full store thousands of kernel launches
# (2**28 scores: 512 MiB in bf16, 1 GiB with fp32 queries); small on the CPU.
SCORE_BUDGET = {"cuda": 2 ** 28, "cpu": 2 ** 26}


class KNNStore(Protocol):
    """What the model asks of a kNN store. Stores behave as values: ``write`` and ``reset`` return
    a new store and leave the caller's as it was."""

    @property
    def kv_heads(self) -> int:
        """Key/value heads the store holds per layer."""

    def write(self, k: Tensor, v: Tensor, rows_valid: Optional[Tensor] = None) -> "KNNStore":
        """Append one block (knn layers, b, kv_heads, n, d), evicting the oldest entries past capacity."""

    def reset(self, rows: Tensor) -> "KNNStore":
        """Forget every entry of the rows where ``rows`` (bool, (batch,)) is True."""

    def retrieve(self, q: Tensor, layer: int, top_k: int) -> tuple[Tensor, Tensor, Tensor]:
        """Exact top-k of q (b, kv_heads, m, d) in kNN layer ``layer`` of the store, by dot product with
        the unit keys: (keys, values (b, kv_heads, m, top_k, d) in q's dtype and device, found (same
        without d, bool: a valid entry)); entries not found hold anything (their weight is zero)."""

    def check(self, config: BlockRecurrentConfig, batch: int, device: torch.device) -> None:
        """Raise a clear error unless this store fits the config and batch."""


@dataclass
class KNNMemory:
    """keys, values: (knn layers, batch, kv_heads, capacity, dim_head); valid: (batch, capacity);
    head: () long tensor, the slot the next block is written at (the same in every row; a tensor
    so that torch.compile does not specialise on it).
    written: entries written so far while the ring has not wrapped (they fill slots 0..written-1),
    so that a search skips the never-written rest; None: unknown (a store built or written inside
    torch.compile, where a Python int would be specialised on), and every slot is searched."""

    keys: Tensor
    values: Tensor
    valid: Tensor
    head: Tensor
    written: Optional[int] = None

    def write(self, k: Tensor, v: Tensor, rows_valid: Optional[Tensor] = None) -> "KNNMemory":
        """Write one block (knn layers, b, kv_heads, block_width, d) over the oldest entries.

        rows_valid (b,): whether the block belongs to each row's current document (a block from
        before a row's reset is written but stays invalid); None: every row's does.
        A new store is returned (the caller's is left as it was): a copy of the store per block.
        """
        capacity, n = self.keys.shape[-2], k.shape[-2]
        slots = (self.head + torch.arange(n, device=k.device)) % capacity
        keys = self.keys.index_copy(-2, slots, F.normalize(k.detach(), dim=-1).to(self.keys.dtype))
        values = self.values.index_copy(-2, slots, v.detach().to(self.values.dtype))
        if rows_valid is None:
            valid = self.valid.index_fill(-1, slots, True)
        else:
            valid = self.valid.index_copy(-1, slots, rows_valid[:, None].expand(-1, n).contiguous())
        written = None
        if not torch.compiler.is_compiling() and self.written is not None:  # never read while tracing
            written = min(self.written + n, capacity)
        return KNNMemory(keys, values, valid, (self.head + n) % capacity, written)

    def searched(self, top_k: int) -> int:
        """How many slots (from slot 0) a search must score: the written ones, at least ``top_k``
        (so that every query gets top_k candidates, unwritten ones marked not found)."""
        capacity = self.keys.shape[-2]
        if torch.compiler.is_compiling() or self.written is None:  # never read while tracing
            return capacity
        return min(max(self.written, top_k), capacity)

    @property
    def kv_heads(self) -> int:
        """Key/value heads per layer."""
        return self.keys.shape[2]

    def reset(self, rows: Tensor) -> "KNNMemory":
        """Invalidate every entry of the rows where ``rows`` (bool, (batch,)) is True."""
        written = None if torch.compiler.is_compiling() else self.written  # never read while tracing
        return KNNMemory(self.keys, self.values, self.valid & ~rows[:, None], self.head, written)

    def retrieve(self, q: Tensor, layer: int, top_k: int) -> tuple[Tensor, Tensor, Tensor]:
        """``KNNStore.retrieve``: the exact chunked ``search``, then a gather on the store's device."""
        keys, values = self.keys[layer], self.values[layer]
        slots = self.searched(top_k)
        index, found = search(q, keys[..., :slots, :], self.valid[:, :slots], top_k)
        gather = index[..., None].expand(*index.shape, q.shape[-1])
        # (b, kv_heads, m, top_k, d): the retrieved entries of each query
        top_keys = keys[:, :, None].expand(-1, -1, q.shape[2], -1, -1).gather(-2, gather).to(q.dtype)
        top_values = values[:, :, None].expand(-1, -1, q.shape[2], -1, -1).gather(-2, gather).to(q.dtype)
        return top_keys, top_values, found

    def check(self, config: BlockRecurrentConfig, batch: int, device: torch.device) -> None:
        """Raise a clear error unless the store's tensors have the config's shapes and sit on ``device``."""
        if config.knn_backend != "torch":
            raise ValueError(f"xl_memories holds a torch kNN store, but the model has "
                             f"knn_backend={config.knn_backend!r}")
        expected = (len(config.knn_layers), batch, config.kv_heads, config.knn_memory_size, config.dim_head)
        for name, t, shape in (("keys", self.keys, expected), ("values", self.values, expected),
                               ("valid", self.valid, (batch, config.knn_memory_size))):
            if tuple(t.shape) != shape or t.device != device:
                raise ValueError(f"xl_memories.knn.{name} must have shape {shape} on {device}, "
                                 f"got {tuple(t.shape)} on {t.device}")


def empty_knn_memory(config: BlockRecurrentConfig, batch: int, device: torch.device,
                     dtype: torch.dtype) -> Optional[KNNStore]:
    """An empty store of the config's ``knn_backend`` for its kNN layers (None when it has none).
    The faiss store ignores ``device`` and ``dtype``: it holds float32 on the CPU."""
    if not config.knn_layers:
        return None
    if config.knn_backend == "faiss":
        from .faiss_memory import empty_faiss_memory  # imported only when asked for: faiss is optional

        return empty_faiss_memory(config, batch)
    shape = (len(config.knn_layers), batch, config.kv_heads, config.knn_memory_size, config.dim_head)
    return KNNMemory(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype),
                     torch.zeros(batch, config.knn_memory_size, dtype=torch.bool, device=device),
                     torch.zeros((), dtype=torch.long, device=device), written=0)


@torch.no_grad()
def search(q: Tensor, keys: Tensor, valid: Tensor, top_k: int, chunk: Optional[int] = None) -> tuple[Tensor, Tensor]:
    """Exact top-k of q (b, kv_heads, m, d) against keys (b, kv_heads, capacity, d) by dot product.

    Returns (indices (b, kv_heads, m, top_k) into the store, found (same shape, bool: the entry is
    valid)). The store is scored ``chunk`` entries at a time (by default as many as keep the
    scores within the device's SCORE_BUDGET elements); each chunk's top-k is merged into the running best.
    """
    b, kv_heads, m, _ = q.shape
    budget = SCORE_BUDGET.get(q.device.type, SCORE_BUDGET["cpu"])
    # a whole number of grouped_top_k's groups per chunk
    chunk = chunk or max(top_k, budget // max(b * kv_heads * m, 1) // TOP_K_GROUP * TOP_K_GROUP)  # 0: no query
    best_scores = best_index = None
    for start in range(0, keys.shape[-2], chunk):
        scores = q @ keys[..., start:start + chunk, :].transpose(-1, -2).to(q.dtype)
        scores.masked_fill_(~valid[:, None, None, start:start + chunk], float("-inf"))
        scores, index = grouped_top_k(scores, top_k)
        index = index + start
        if best_scores is not None:
            scores, index = torch.cat((best_scores, scores), dim=-1), torch.cat((best_index, index), dim=-1)
            scores, order = scores.topk(min(top_k, scores.shape[-1]), dim=-1)
            index = index.gather(-1, order)
        best_scores, best_index = scores, index
    return best_index, best_scores > float("-inf")


TOP_K_GROUP = 16  # entries per group in grouped_top_k


def grouped_top_k(scores: Tensor, k: int, group: int = TOP_K_GROUP) -> tuple[Tensor, Tensor]:
    """``scores.topk(k)`` over the last dim (values, indices), in two cheap passes instead of one
    slow one: torch.topk over long rows is far slower than a reduction, so take each group of
    ``group`` consecutive scores' maximum, the top k groups by maximum, then the top k of their
    k * group scores. Exact: the k best scores lie in at most k groups, each with a maximum at
    least the k-th best score, and at most k groups have one; so the top k groups hold them all
    (ties may be broken differently). Rows too short to gain, or not a whole number of groups, go
    straight to torch.topk."""
    length = scores.shape[-1]
    if length % group != 0 or length < 4 * k * group:
        return scores.topk(min(k, length), dim=-1)
    groups = scores.unflatten(-1, (length // group, group)).amax(dim=-1).topk(k, dim=-1).indices
    candidates = (groups[..., None] * group + torch.arange(group, device=scores.device)).flatten(-2)
    best, order = scores.gather(-1, candidates).topk(k, dim=-1)
    return best, candidates.gather(-1, order)


def recall(q: Tensor, store: KNNStore, layer: int, top_k: int, scale: float) -> tuple[Tensor, Tensor]:
    """Attention of q (b, heads, n, d) over its top-k entries of kNN layer ``layer`` of ``store``.

    q is the query as scored against unit keys (its qk-norm gains folded in). Returns (out
    (b, heads, n, d), logsumexp (b, heads, n, 1) fp32 of the scores: the softmax's normaliser,
    which ``joint_softmax`` weighs against the local attention's; about float32's lowest value
    where the query found no valid entry). Gradients reach q; the store is constant. Shared by every
    store: only the retrieval differs.
    """
    b, heads, n, d = q.shape
    kv_heads = store.kv_heads
    grouped = fold_query_groups(q, kv_heads)  # query heads sharing a key/value head
    top_keys, top_values, found = store.retrieve(grouped, layer, top_k)
    scores = torch.einsum("bhmd,bhmkd->bhmk", grouped, top_keys) * scale
    weights, lse = masked_softmax(scores, found)
    out = torch.einsum("bhmk,bhmkd->bhmd", weights.to(top_values.dtype), top_values)
    return out.reshape(b, heads, n, d), lse.reshape(b, heads, n, 1)


def masked_softmax(scores: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor]:
    """fp32 softmax of ``scores`` over the ``allowed`` entries (last dim), and the logsumexp of the
    allowed scores (keepdim). Disallowed scores take float32's lowest value rather than -inf: a
    query with no allowed entry then has a finite logsumexp (and gradient) that gives the memory no
    weight in ``joint_softmax``, instead of NaNs; its weights are all zero."""
    scores = scores.float().masked_fill(~allowed, torch.finfo(torch.float32).min)
    return scores.softmax(dim=-1) * allowed, scores.logsumexp(dim=-1, keepdim=True)


def routed_recall(q: Tensor, store: KNNMemory, layer: int, top_k: int, scale: float,
                  router: nn.Module) -> tuple[Tensor, Tensor]:
    """Attention of q (b, heads, n, d) over ``top_k`` entries of kNN layer ``layer`` of the torch store,
    chosen by ``router`` (colt5_attention.CoordinateDescentRouter: a learned routing token scores every entry,
    coordinate descent makes the top-k differentiable). The choice depends on the store alone, so
    it is the same for every query of the block, and causal. Gradients reach q and the router
    (the chosen values are scaled by its straight-through scores). Returns (out, logsumexp) as ``recall``.
    """
    b, heads, n, d = q.shape
    # the router scores the written slots only; more than top_k of them, or it skips its own
    # scoring (all chosen, no straight-through scale) and the gradient would differ
    slots = store.searched(top_k + 1)
    keys, values, valid = store.keys[layer, ..., :slots, :], store.values[layer, ..., :slots, :], store.valid[:, :slots]
    kv_heads, capacity = keys.shape[1], keys.shape[2]
    flat_keys, flat_values = keys.reshape(b * kv_heads, capacity, d), values.reshape(b * kv_heads, capacity, d)
    flat_valid = valid.repeat_interleave(kv_heads, dim=0)
    # in the router's own dtype: its weights follow the model's (fp32 under autocast, or .double() ...)
    route = router(flat_keys.to(next(router.parameters()).dtype), num_tokens=top_k, mask=flat_valid)
    if route.indices is None:  # the store is no larger than top_k: every entry is chosen
        index = torch.arange(capacity, device=q.device).expand(b * kv_heads, capacity)
    else:
        index = route.indices
    weights = route.scores.to(q.dtype)
    chosen_len = index.shape[-1]  # named, not -1: a reshape cannot infer it when the batch is empty
    chosen = flat_valid.gather(1, index).reshape(b, kv_heads, 1, chosen_len)
    gather = index[..., None].expand(-1, -1, d)
    top_keys = flat_keys.gather(1, gather).to(q.dtype).reshape(b, kv_heads, chosen_len, d)
    top_values = (flat_values.gather(1, gather).to(q.dtype) * weights[..., None]).reshape(b, kv_heads, chosen_len, d)
    scores = (fold_query_groups(q, kv_heads) @ top_keys.transpose(-1, -2)) * scale
    weights, lse = masked_softmax(scores, chosen)
    out = weights.to(top_values.dtype) @ top_values
    return out.reshape(b, heads, n, d), lse.reshape(b, heads, n, 1)


def joint_softmax(local: Tensor, local_lse: Tensor, memory: Tensor, memory_lse: Tensor) -> Tensor:
    """One softmax over a query's local keys and its retrieved entries, from the two attentions
    computed apart: out = local * (1 - w) + memory * w with w = sigmoid(memory_lse - local_lse), the
    share of the joint normaliser that the memory's scores hold (exactly softmax over the union).
    A retrieved entry thus competes with the local keys on its score alone: a memory that matches
    the query as well as a local key would is attended as much, with no gate to learn first.
    local, memory (b, heads, n, d); local_lse, memory_lse (b, heads, n, 1) fp32."""
    w = torch.sigmoid(memory_lse - local_lse).to(local.dtype)
    return local + w * (memory - local)
