"""kNN memory (Memorizing Transformers, Wu et al. 2022): keys/values far beyond the XL and
compressed memories, searched exactly by each query — or, with ``knn_retrieval="query_routed"``,
by each query within the groups of entries it routes itself to (``routed_search``), or, with
``knn_retrieval="routed"``, a subset picked per block by a learned CoLT5 coordinate-descent router
(Ainslie et al. 2023).

Every kNN layer keeps, per batch row, a FIFO of its ``knn_memory_size`` newest past keys/values:
each block pushed out of the XL memory is appended and the oldest entries fall out of reach (never
a wholesale wipe). Keys are stored as unit vectors without positions, so a query finds them by
cosine similarity. Entries are stored detached. A row that resets reaches none of its older entries.

The search is exact: a block's queries are scored against every written slot of the store by one
matmul per chunk of queries (chunks bound the temporaries, a GPU takes few), the scores of the
slots some row may not reach are masked, then ``grouped_top_k`` picks each query's best entries in
two cheap passes: the maxima of strided groups of slots, then the exact top-k among the best
groups' slots. The store knows on the host which slots every row reaches (``ranges_to_mask``), so
that the mask, a pass over the scores as costly as the matmul, touches only the others: a full
store without resets masks its slack alone, a filling one nothing. On CUDA, Triton kernels
(``knn_kernels``) find the same without writing the scores out: the group maxima come out of the
matmul, then each query's best groups are scored again (writing and reading the scores, not the
matmul, was the search's time).
The routed search scores each query against the mean key of every KNN_ROUTE_GROUP consecutive slots
instead (itself an exact ``search``, over those means: on CUDA in the kernels above), and exactly
only within its best groups (``search_groups``; on CUDA by the kernel that scores the exact search's
best groups, reading the candidates' keys in place instead of gathering them).

Storage (``KNNMemory``): a ring buffer of ``capacity + slack`` slots, written in place. A
``KNNMemory`` is a view of it: the buffer, how many entries were written when the view was made,
and where each row's current document starts; it reaches the newest ``capacity`` of those entries.
Views behave as values: one that a caller holds retrieves the same whatever is written after it,
because a write goes in place only when it overwrites nothing a live view reaches — the writer is
the newest view of its buffer, and the slack keeps the entries of a caller's memories while one
model call (max_seq_len tokens) writes past them. Otherwise (branching from older memories,
memories kept across calls, activation checkpointing's recomputation) the buffer is copied first.
The buffer grows (doubling) as it fills, so a store holding few entries costs little memory. This
bookkeeping is Python: under torch.compile a write copies the whole store instead, as it always did.

Two stores implement ``KNNStore``: ``KNNMemory`` here (``knn_backend="torch"``, tensors on the
model's device, compilable) and ``faiss_memory.FaissKNNMemory`` (``knn_backend="faiss"``, on the
CPU, eager only). A store retrieves each query's top-k entries; the attention over them
(``recall``) is shared, and ``joint_softmax`` merges it with the layer's local attention as one
softmax over both.
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass, field
from types import ModuleType
from typing import Optional, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.weak import WeakIdKeyDictionary

from .attention import fold_query_groups
from .config import KNN_ROUTE_GROUP, BlockRecurrentConfig
from .top_k import TOP_K_GROUP, grouped_top_k, grouping_pays, masked_top_k

# Scores computed at once (a chunk of queries against the whole store): bounds the temporaries of
# a search. Each chunk costs a few kernels whatever its size, so a GPU takes large ones: 2**30
# scores, 2 GiB in bf16 (a full store of 262,656 slots at batch 50: 19 chunks of 81 of a block's
# 1,536 queries per row); 2**26 on the CPU.
SCORE_BUDGET = {"cuda": 2 ** 30, "cpu": 2 ** 26}
# Devices whose searches take the fused kernels of ``knn_kernels`` (``_kernels_for``). Triton's
# interpreter runs them on CPU tensors too: scripts/check_knn_kernels.py adds "cpu" to check them there.
FUSED_DEVICES = ("cuda",)
# Places along a row of slots where reachability may change (group_means, the routed search): a view
# reaches one run of its ring, which the slots [0, searched) show as one run or two (wrapped), so at
# most two of its groups of KNN_ROUTE_GROUP consecutive slots are partly reachable.
WINDOW_EDGES = 2


class KNNStore(Protocol):
    """What the model asks of a kNN store. Stores behave as values: ``write`` and ``reset`` return
    a new store, and the caller's retrieves what it did."""

    @property
    def kv_heads(self) -> int:
        """Key/value heads the store holds per layer."""

    def write(self, k: Tensor, v: Tensor, rows_valid: Optional[Tensor] = None) -> "KNNStore":
        """Append one block (knn layers, b, kv_heads, n, d), evicting the oldest entries past capacity."""

    def reset(self, rows: Tensor) -> "KNNStore":
        """Forget every entry of the rows where ``rows`` (bool, (batch,)) is True."""

    def retrieve(self, q: Tensor, layer: int, top_k: int,
                 route_groups: Optional[int] = None) -> tuple[Tensor, Tensor, Tensor]:
        """Top-k of q (b, kv_heads, m, d) in kNN layer ``layer`` of the store, by dot product with the
        unit keys: exact, or within each query's ``route_groups`` best groups (``routed_search``; the
        torch store only). Returns (keys, values (b, kv_heads, m, top_k, d) in q's dtype and device,
        found (same without d, bool: a valid entry)); entries not found hold anything (weight zero)."""

    def check(self, config: BlockRecurrentConfig, batch: int, device: torch.device) -> None:
        """Raise a clear error unless this store fits the config and batch."""


@dataclass
class _Ring:
    """What eager code knows of one ring buffer (``_RINGS``): the entries written into it so far,
    and weak references to its views (a view that nobody holds can no longer be observed)."""

    written: int
    views: list[weakref.ref] = field(default_factory=list)

    def overwrites_reach(self, n: int, slots: int) -> bool:
        """Whether writing the next n entries in place would overwrite an entry that a live view reaches."""
        # the entries whose slots the write takes: positions written + i - slots, those >= 0
        lost_from, lost_to = max(0, self.written - slots), self.written + n - slots
        if lost_to <= lost_from:
            return False
        self.views = [ref for ref in self.views if ref() is not None]  # drop the views nobody holds
        return any(view is not None and view.reaches(lost_from, lost_to) for view in (ref() for ref in self.views))


# keys buffer -> its _Ring, for the buffers made by eager code here; any other buffer (loaded, moved,
# or made inside torch.compile) is copied before a write
_RINGS: WeakIdKeyDictionary = WeakIdKeyDictionary()


@dataclass(eq=False)
class KNNMemory:
    """A view of a ring buffer of past keys/values (see the module docstring).

    keys, values: (knn layers, batch, kv_heads, allocated, dim_head), allocated <= ``slots`` (the
        buffer grows as it fills); the entry at position p (the p-th written) sits in slot p % slots.
    position: () long tensor: entries written before this view (a tensor so that torch.compile does
        not specialise on it). start: (batch,) long: each row's first position of its current document.
    capacity: entries a view reaches (the newest ones). slots: the ring's size, capacity + slack.
    written: ``position`` on the host; None where unknown (a store written inside torch.compile,
        where a Python int would be specialised on): then every allocated slot is searched.
    latest_start: on the host, a bound that no row's ``start`` exceeds (the position of the latest
        reset, or of the latest write with rows_valid); None where unknown (as ``written``): then a
        search masks every slot's scores, else only those of ``ranges_to_mask``.
    """

    keys: Tensor
    values: Tensor
    position: Tensor
    start: Tensor
    capacity: int
    slots: int
    written: Optional[int] = None
    latest_start: Optional[int] = None

    def __post_init__(self) -> None:
        if not torch.compiler.is_compiling():  # the bookkeeping is eager only (see the module docstring)
            ring = _RINGS.get(self.keys)
            if ring is not None:
                ring.views.append(weakref.ref(self))

    @classmethod
    def empty(cls, layers: int, batch: int, kv_heads: int, dim_head: int, capacity: int, *, slack: int = 0,
              reserve: int = 0, device: Optional[torch.device] = None,
              dtype: Optional[torch.dtype] = None) -> "KNNMemory":
        """A store holding nothing: ``capacity`` entries in reach, ``slack`` more kept in the ring (so
        that views up to ``slack`` entries behind the newest stay intact without a copy), ``reserve``
        slots allocated at first (all of them under torch.compile, which needs fixed shapes)."""
        for name, value, least in (("capacity", capacity, 1), ("slack", slack, 0), ("reserve", reserve, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
        slots = capacity + slack
        allocated = slots if torch.compiler.is_compiling() else min(reserve, slots)
        shape = (layers, batch, kv_heads, allocated, dim_head)
        keys = torch.zeros(shape, device=device, dtype=dtype)
        if not torch.compiler.is_compiling():
            _RINGS[keys] = _Ring(written=0)
        return cls(keys, torch.zeros_like(keys), torch.zeros((), dtype=torch.long, device=device),
                   torch.zeros(batch, dtype=torch.long, device=device), capacity, slots, written=0, latest_start=0)

    @property
    def kv_heads(self) -> int:
        """Key/value heads per layer."""
        return self.keys.shape[2]

    @property
    def allocated(self) -> int:
        """Slots allocated so far."""
        return self.keys.shape[-2]

    def reaches(self, first: int, end: int) -> bool:
        """Whether this view reaches an entry at a position in [first, end) (of unknown position, as a
        view made by hand may be: assume it does)."""
        return self.written is None or (max(0, self.written - self.capacity) < end and first < self.written)

    def write(self, k: Tensor, v: Tensor, rows_valid: Optional[Tensor] = None) -> "KNNMemory":
        """Append one block (knn layers, b, kv_heads, n, d); the entries past the capacity fall out of reach.

        rows_valid (b,): whether the block belongs to each row's current document (a block from
        before a row's reset is written, and the row's document starts after it); None: every row's.
        In place where no live view reaches what it overwrites, else into a copy (see the module docstring).
        """
        n = k.shape[-2]
        index = (self.position + torch.arange(n, device=self.position.device)) % self.slots
        new_keys = F.normalize(k.detach(), dim=-1).to(self.keys.dtype)
        new_values = v.detach().to(self.values.dtype)
        position = self.position + n
        start = self.start if rows_valid is None else torch.where(rows_valid, self.start, position)
        if torch.compiler.is_compiling():  # out of place, into the whole ring (fixed shapes)
            keys, values = ((t if t.shape[-2] == self.slots else _grown(t, self.slots)).index_copy(-2, index, new)
                            for t, new in ((self.keys, new_keys), (self.values, new_values)))
            return KNNMemory(keys, values, position, start, self.capacity, self.slots)
        # one host sync each, once per store (made inside torch.compile, or by hand)
        written = int(self.position) if self.written is None else self.written
        if rows_valid is not None:  # entries some row does not reach: every row's start is bounded by now
            latest_start = written + n
        else:
            latest_start = max(self.start.tolist(), default=0) if self.latest_start is None else self.latest_start
        keys, values = self._writable(written, n)
        keys.index_copy_(-2, index, new_keys)
        values.index_copy_(-2, index, new_values)
        _RINGS[keys].written = written + n
        return KNNMemory(keys, values, position, start, self.capacity, self.slots, written + n, latest_start)

    def _writable(self, written: int, n: int) -> tuple[Tensor, Tensor]:
        """Buffers to write n entries into in place after this view's ``written`` ones: this view's own
        when they are large enough, nothing was written into them after this view (else this write
        branches off), and the write overwrites nothing a live view reaches; else copies, grown as
        needed (doubling, to the whole ring at most), registered as a new ring."""
        needed = min(written + n, self.slots)
        size = self.allocated if needed <= self.allocated else min(self.slots, max(needed, 2 * self.allocated))
        ring = _RINGS.get(self.keys)
        if (size == self.allocated and ring is not None and ring.written == written
                and not ring.overwrites_reach(n, self.slots)):
            return self.keys, self.values
        keys, values = _grown(self.keys, size), _grown(self.values, size)
        _RINGS[keys] = _Ring(written)
        return keys, values

    def searched(self, top_k: int) -> int:
        """How many slots (from slot 0) a search must score: the written ones, at least ``top_k``
        (so that every query gets top_k candidates, unwritten ones marked not found)."""
        if torch.compiler.is_compiling() or self.written is None:  # never read while tracing
            return self.allocated
        return min(max(self.written, top_k), self.allocated)

    def reachable(self, searched: int) -> Tensor:
        """(batch, searched) bool: which of the slots 0..searched-1 hold an entry this view reaches — of
        each row, the newest min(capacity, entries since its document started) (older ones, the ring's
        slack, or entries written after the view, are out of reach)."""
        slots = torch.arange(searched, device=self.position.device)
        # 0: the newest entry; an entry written after the view comes out >= capacity (a write goes past
        # a live view by less than the slack, see _Ring)
        age = (self.position - 1 - slots) % self.slots
        reach = (self.position - self.start).clamp(max=self.capacity)
        return age < reach[:, None]

    def ranges_to_mask(self, searched: int) -> list[tuple[int, int]]:
        """The ranges [lo, hi) of the slots 0..searched-1 that some row may not reach (``reachable``
        False), known on the host without waiting for the device: every other slot searched holds an
        entry that every row reaches, so a search masks the scores of these ranges only. Where the
        host does not know (``written`` or ``latest_start`` None), all of them."""
        if torch.compiler.is_compiling() or self.written is None or self.latest_start is None:
            return [(0, searched)] if searched else []
        # every row reaches the newest `reached` positions; the rest of the ring (the slack, unwritten
        # slots, entries of older documents or written after this view) is one run of slots from the
        # next write's on, wrapping past the last slot
        reached = max(0, min(self.capacity, self.written - self.latest_start))
        lo = self.written % self.slots
        hi = lo + self.slots - reached
        runs = ((lo, min(hi, self.slots)), (0, hi - self.slots))
        return [(a, min(b, searched)) for a, b in runs if a < min(b, searched)]

    def reset(self, rows: Tensor) -> "KNNMemory":
        """A view in which the rows where ``rows`` (bool, (batch,)) is True reach none of their entries."""
        written = None if torch.compiler.is_compiling() else self.written  # never read while tracing
        # the reset rows' documents start at the position: no row's later (latest_start = written)
        return KNNMemory(self.keys, self.values, self.position, torch.where(rows, self.position, self.start),
                         self.capacity, self.slots, written, written)

    def retrieve(self, q: Tensor, layer: int, top_k: int,
                 route_groups: Optional[int] = None) -> tuple[Tensor, Tensor, Tensor]:
        """``KNNStore.retrieve``: the exact ``search`` (or ``routed_search``), then a gather on the store's device."""
        searched = self.searched(top_k)
        if searched == 0:  # no slot allocated yet (made with reserve=0, nothing written): nothing to find
            found = torch.zeros(*q.shape[:3], top_k, dtype=torch.bool, device=q.device)
            nothing = q.new_zeros(*found.shape, q.shape[-1])
            return nothing, nothing, found
        keys, values = self.keys[layer, ..., :searched, :], self.values[layer, ..., :searched, :]
        ranges = self.ranges_to_mask(searched)
        if route_groups is None:
            index, found = search(q, keys, self.reachable(searched), top_k, ranges=ranges)
        else:
            index, found = routed_search(q, keys, self.reachable(searched), top_k, route_groups, ranges=ranges)
        gather = index[..., None].expand(*index.shape, q.shape[-1])
        # (b, kv_heads, m, top_k, d): the retrieved entries of each query
        top_keys = keys[:, :, None].expand(-1, -1, q.shape[2], -1, -1).gather(-2, gather).to(q.dtype)
        top_values = values[:, :, None].expand(-1, -1, q.shape[2], -1, -1).gather(-2, gather).to(q.dtype)
        return top_keys, top_values, found

    def to(self, *args, **kwargs) -> "KNNMemory":
        """The view with its keys/values moved/cast as ``Tensor.to`` would (positions keep their dtype)."""
        keys, values = self.keys.to(*args, **kwargs), self.values.to(*args, **kwargs)
        return KNNMemory(keys, values, self.position.to(keys.device), self.start.to(keys.device), self.capacity,
                         self.slots, self.written, self.latest_start)

    def check(self, config: BlockRecurrentConfig, batch: int, device: torch.device) -> None:
        """Raise a clear error unless the store's tensors fit the config and batch and sit on ``device``."""
        if config.knn_backend != "torch":
            raise ValueError(f"xl_memories holds a torch kNN store, but the model has "
                             f"knn_backend={config.knn_backend!r}")
        if self.capacity != config.knn_memory_size or self.slots < self.capacity:
            raise ValueError(f"xl_memories.knn must reach knn_memory_size={config.knn_memory_size} entries in a ring of "
                             f"at least as many slots, got capacity={self.capacity}, slots={self.slots}")
        layers, kv_heads, dim_head = len(config.knn_layers), config.kv_heads, config.dim_head
        for name, t in (("keys", self.keys), ("values", self.values)):
            shape = tuple(t.shape)
            if (len(shape) != 5 or shape[:3] != (layers, batch, kv_heads) or shape[3] > self.slots
                    or shape[4] != dim_head or t.device != device):
                raise ValueError(f"xl_memories.knn.{name} must have shape (knn layers={layers}, batch={batch}, "
                                 f"kv_heads={kv_heads}, slots<={self.slots}, dim_head={dim_head}) on {device}, "
                                 f"got {shape} on {t.device}")
        for name, t, shape in (("position", self.position, ()), ("start", self.start, (batch,))):
            if tuple(t.shape) != shape or t.device != device:
                raise ValueError(f"xl_memories.knn.{name} must have shape {shape} on {device}, "
                                 f"got {tuple(t.shape)} on {t.device}")


def _grown(t: Tensor, size: int) -> Tensor:
    """A copy of buffer t (..., allocated, d) with ``size`` >= allocated slots, the new ones zero."""
    return F.pad(t, (0, 0, 0, size - t.shape[-2]))


def empty_knn_memory(config: BlockRecurrentConfig, batch: int, device: torch.device,
                     dtype: torch.dtype) -> Optional[KNNStore]:
    """An empty store of the config's ``knn_backend`` for its kNN layers (None when it has none).
    The torch store keeps one model call (max_seq_len entries) of slack, so that the memories a
    caller passes stay intact without a copy while the call writes past them; it starts with room
    for top_k entries (whole blocks) and grows. The faiss store ignores ``device`` and ``dtype``:
    it holds float32 on the CPU."""
    if not config.knn_layers:
        return None
    if config.knn_backend == "faiss":
        from .faiss_memory import empty_faiss_memory  # imported only when asked for: faiss is optional

        return empty_faiss_memory(config, batch)
    width = config.block_width
    return KNNMemory.empty(len(config.knn_layers), batch, config.kv_heads, config.dim_head, config.knn_memory_size,
                           slack=config.max_seq_len, reserve=-(-config.knn_top_k // width) * width,
                           device=device, dtype=dtype)


@torch.no_grad()
def search(q: Tensor, keys: Tensor, reachable: Tensor, top_k: int, budget: Optional[int] = None,
           ranges: Optional[Sequence[tuple[int, int]]] = None) -> tuple[Tensor, Tensor]:
    """Exact top-k of q (b, kv_heads, m, d) against keys (b, kv_heads, slots, d) by dot product,
    over the slots ``reachable`` (b, slots) marks True in each row (any pattern). Reads its
    arguments only: it masks in place the scores it computes.

    Returns (indices (b, kv_heads, m, top_k) into the slots, found (same shape, bool: a reachable
    entry; fewer than top_k reachable, or fewer slots, leave the rest not found)). All slots are
    scored by one matmul per chunk of queries, each chunk as many as keep the scores within
    ``budget`` elements (default: the device's SCORE_BUDGET). ``ranges``: the slot ranges [lo, hi)
    outside which every slot is reachable in every row (``KNNMemory.ranges_to_mask``): only their
    scores are masked, sparing a pass over all of them; None: every slot's.

    On CUDA, where ``fused_search_fits`` and Triton imports, the fused kernels of ``knn_kernels``
    find the same without writing the scores out: the group maxima of grouped_top_k come out of the
    matmul (``budget`` then bounds those, 1/TOP_K_GROUP of the scores), every slot is masked in the
    kernel where ``ranges`` holds any (the same result: outside them every slot is reachable), none
    where it is empty. The torch path here stays the definition (and runs everywhere else).
    """
    b, kv_heads, m, _ = q.shape
    budget = budget or SCORE_BUDGET.get(q.device.type, SCORE_BUDGET["cpu"])
    kernels = _kernels_for(q, fused_search_fits(q, keys, top_k))
    if kernels:
        mask = _kernel_mask(reachable, ranges)

        def top(part: Tensor) -> tuple[Tensor, Tensor]:
            return kernels.fused_top_k(part, keys, mask, top_k, TOP_K_GROUP)
    else:
        keys_t = keys.transpose(-1, -2).to(q.dtype)
        # the same slots for every head and query of a row
        unreachable = [(lo, hi, ~reachable[:, None, None, lo:hi])
                       for lo, hi in ([(0, keys.shape[-2])] if ranges is None else ranges)]

        def top(part: Tensor) -> tuple[Tensor, Tensor]:
            scores = part @ keys_t  # a fresh matmul output: masked in place, no copy
            for lo, hi, outside in unreachable:
                scores[..., lo:hi].masked_fill_(outside, float("-inf"))
            return grouped_top_k(scores, None, top_k)

    per_query = keys.shape[-2] // TOP_K_GROUP if kernels else keys.shape[-2]  # maxima, or scores, per query
    chunk = max(1, budget // max(b * kv_heads * per_query, 1))
    # max(m, 1): a block of no query still gives (b, kv_heads, 0, top_k)
    best = [top(q[:, :, i:i + chunk]) for i in range(0, max(m, 1), chunk)]
    scores, index = (torch.cat(parts, dim=2) for parts in zip(*best))
    return index, scores > float("-inf")


# Widest head the fused search takes: its kernel holds a tile of 128 queries x dim_head in registers.
FUSED_MAX_DIM = 256


def fused_kernels_fit(q: Tensor) -> bool:
    """Whether the fused kernels (``knn_kernels``) take queries like q, wherever they lie: eager
    (torch.compile traces the torch path), a dtype tl.dot takes, a head no wider than FUSED_MAX_DIM.
    What ``routed_search`` asks; ``search`` asks more (``fused_search_fits``)."""
    return (not torch.compiler.is_compiling() and q.dtype in (torch.float16, torch.bfloat16, torch.float32)
            and q.shape[-1] <= FUSED_MAX_DIM)


def fused_search_fits(q: Tensor, keys: Tensor, top_k: int) -> bool:
    """Whether ``search`` may take the fused kernels (``knn_kernels``) for these arguments, wherever
    they lie: ``fused_kernels_fit``, and rows that grouped_top_k would group (``grouping_pays``)."""
    return fused_kernels_fit(q) and grouping_pays(keys.shape[-2], top_k)


def _kernels_for(q: Tensor, fits: bool) -> Optional[ModuleType]:
    """The module of the fused kernels where a search of q takes them (q on FUSED_DEVICES, ``fits``
    the search's own conditions, Triton imports), else None."""
    return _fused_kernels() if q.device.type in FUSED_DEVICES and fits else None


def _all_reachable(ranges: Optional[Sequence[tuple[int, int]]]) -> bool:
    """Whether ``ranges`` (see ``search``) says that every slot is reachable: it is empty."""
    return ranges is not None and len(ranges) == 0


def _kernel_mask(reachable: Tensor, ranges: Optional[Sequence[tuple[int, int]]]) -> Optional[Tensor]:
    """The reachable flags the kernels mask by: none where every slot is reachable (``ranges``
    empty); else all of them (outside the ranges they are True: the same result)."""
    return None if _all_reachable(ranges) else reachable


@functools.cache
def _fused_kernels():
    """The module of the fused search kernels, or None where Triton does not import (it is optional;
    torch's CUDA builds bring it). Imported at the first CUDA search only: CPU users never load Triton;
    the answer is kept, so a machine without Triton does not try again at every search."""
    try:
        from . import knn_kernels
    except ImportError:
        return None
    return knn_kernels


@torch.no_grad()
def routed_search(q: Tensor, keys: Tensor, reachable: Tensor, top_k: int, route_groups: int,
                  budget: Optional[int] = None,
                  ranges: Optional[Sequence[tuple[int, int]]] = None) -> tuple[Tensor, Tensor]:
    """Each query's top-k within the groups it routes itself to: ``search``'s arguments and result,
    except that ``reachable`` must change value at most WINDOW_EDGES times along a row, as
    ``KNNMemory.reachable`` does (``group_means`` relies on it), and the slots are taken as groups of
    KNN_ROUTE_GROUP consecutive ones (a store's slots come in whole groups where its block width is
    a multiple of KNN_ROUTE_GROUP). A query's score against a group's mean reachable key is the mean
    of its scores against those keys; it keeps its ``route_groups`` best-scoring groups and searches
    their reachable entries exactly (``search_groups``).

    The route depends on the query and the store alone: causal, and the same whether a block's
    queries come at once or one by one (cached decoding). It is itself an exact search, over the
    group means: one score per group instead of one per slot (on CUDA by ``search``'s fused
    kernels, which never write those scores out), then route_groups x KNN_ROUTE_GROUP candidates
    scored per query. Where that is every slot, the exact search is the same and cheaper, and runs
    instead. ``budget`` and ``ranges`` as ``search``'s; where ``ranges`` is empty (every slot
    reachable) the means are plain means and nothing is masked.
    """
    slots = keys.shape[-2]
    if route_groups * KNN_ROUTE_GROUP >= slots:
        return search(q, keys, reachable, top_k, budget, ranges)
    if slots % KNN_ROUTE_GROUP != 0:
        raise ValueError(f"routed_search needs whole groups of {KNN_ROUTE_GROUP} slots, got {slots} slots")
    everywhere = _all_reachable(ranges)
    summaries, routable = group_means(keys, None if everywhere else reachable)
    route, _ = search(q, summaries, routable, route_groups, budget, [] if everywhere else None)
    return search_groups(q, keys, reachable, route, top_k, budget, ranges)


@torch.no_grad()
def search_groups(q: Tensor, keys: Tensor, reachable: Tensor, route: Tensor, top_k: int,
                  budget: Optional[int] = None,
                  ranges: Optional[Sequence[tuple[int, int]]] = None) -> tuple[Tensor, Tensor]:
    """Each query's exact top-k among the reachable members of its groups ``route`` (b, kv_heads, m,
    r): group c holds the KNN_ROUTE_GROUP consecutive slots from c * KNN_ROUTE_GROUP. Other
    arguments and the result as ``search``'s. The torch path (the definition, and what runs on the
    CPU) gathers the candidates' keys; on CUDA, where ``fused_kernels_fit`` and Triton imports,
    ``knn_kernels``' member scores kernel reads them in place (at batch 32 over 262,144 slots the
    gathered keys were gigabytes per block), masking as ``search``'s kernels do. Chunks of queries
    keep the gathered keys (or, in the kernel, the candidates' scores) within ``budget`` elements."""
    b, kv_heads, m, d = q.shape
    route_groups = route.shape[-1]
    budget = budget or SCORE_BUDGET.get(q.device.type, SCORE_BUDGET["cpu"])
    kernels = _kernels_for(q, fused_kernels_fit(q))
    if kernels:
        mask = _kernel_mask(reachable, ranges)

        def top(part: Tensor, chosen: Tensor) -> tuple[Tensor, Tensor]:
            # group c's member j is slot chosen[c] * KNN_ROUTE_GROUP + j: consecutive groups
            return kernels.member_top_k(part, keys, mask, chosen, top_k, KNN_ROUTE_GROUP, KNN_ROUTE_GROUP, 1)
    else:
        # (b, kv_heads, groups, G * d): a group as one row
        groups = keys.unflatten(-2, (-1, KNN_ROUTE_GROUP)).flatten(-2)
        offsets = torch.arange(KNN_ROUTE_GROUP, device=q.device)
        everywhere = _all_reachable(ranges)  # no flag to read

        def top(part: Tensor, chosen: Tensor) -> tuple[Tensor, Tensor]:
            c = part.shape[2]
            candidates = (chosen[..., None] * KNN_ROUTE_GROUP + offsets).flatten(-2)  # their slots
            candidate_keys = groups.gather(2, chosen.flatten(-2)[..., None].expand(-1, -1, -1, groups.shape[-1]))
            candidate_keys = candidate_keys.view(b, kv_heads, c, route_groups * KNN_ROUTE_GROUP, d).to(q.dtype)
            scores = torch.einsum("bhcd,bhckd->bhck", part, candidate_keys)
            allowed = None if everywhere else \
                reachable[:, None, None, :].expand(-1, kv_heads, c, -1).gather(-1, candidates)
            best, order = masked_top_k(scores, allowed, top_k)
            return best, candidates.gather(-1, order)

    per_query = route_groups * KNN_ROUTE_GROUP * (1 if kernels else d)  # candidates' scores, or keys
    chunk = max(1, budget // max(b * kv_heads * per_query, 1))
    # max(m, 1): a block of no query still gives (b, kv_heads, 0, top_k)
    best = [top(q[:, :, i:i + chunk], route[:, :, i:i + chunk]) for i in range(0, max(m, 1), chunk)]
    scores, index = (torch.cat(parts, dim=2) for parts in zip(*best))
    return index, scores > float("-inf")


def group_means(keys: Tensor, reachable: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """The mean reachable key of each group of KNN_ROUTE_GROUP consecutive slots: keys (b, kv_heads,
    slots, d) and reachable (b, slots), slots a multiple of KNN_ROUTE_GROUP; None: every slot
    reachable. Returns (means (b, kv_heads, groups, d), routable (b, groups): groups holding a
    reachable entry).

    Every slot's key is summed (one read of the store, no masked copy of it), then the sums of the
    groups that are only partly reachable are recomputed from their reachable members alone:
    reachability changes value at most WINDOW_EDGES times along a row, so at most that many groups
    are (a group of no reachable entry is never routed to). Unreachable slots may hold anything
    (entries written after the view): they must not count, not even by rounding (as subtracting them
    back would), or a view would route as its ring's later history.
    """
    b, kv_heads, _, d = keys.shape
    groups = keys.unflatten(-2, (-1, KNN_ROUTE_GROUP))  # (b, kv_heads, groups, G, d)
    if reachable is None:  # the same sums and count as below, without a pass over the flags
        return groups.sum(-2) / KNN_ROUTE_GROUP, torch.ones((), dtype=torch.bool, device=keys.device).expand(
            b, groups.shape[2])
    members = reachable.unflatten(-1, (-1, KNN_ROUTE_GROUP))  # (b, groups, G)
    count = members.sum(-1)
    partial = ((count > 0) & (count < KNN_ROUTE_GROUP)).to(keys.dtype)
    # every partly reachable group (and others where fewer: a full group's sum is the same recomputed,
    # an empty one's is never read)
    mixed = partial.topk(min(WINDOW_EDGES, partial.shape[-1]), dim=-1).indices  # (b, e), distinct
    mixed_keys = groups.gather(2, mixed[:, None, :, None, None].expand(-1, kv_heads, -1, KNN_ROUTE_GROUP, d))
    inside = members.gather(1, mixed[..., None].expand(-1, -1, KNN_ROUTE_GROUP))  # (b, e, G)
    reachable_sums = (mixed_keys * inside[:, None, :, :, None]).sum(-2)  # (b, kv_heads, e, d)
    sums = groups.sum(-2).scatter_(2, mixed[:, None, :, None].expand(-1, kv_heads, -1, d), reachable_sums)
    return sums / count.clamp(min=1)[:, None, :, None].to(sums.dtype), count > 0


def reference_search(q: Tensor, keys: Tensor, reachable: Tensor, top_k: int) -> tuple[Tensor, Tensor]:
    """``search`` written out (every score at once, then torch.topk): the definition it is tested against."""
    scores, index = masked_top_k(q @ keys.transpose(-1, -2).to(q.dtype), reachable[:, None, None, :], top_k)
    return index, scores > float("-inf")


def recall(q: Tensor, store: KNNStore, layer: int, top_k: int, scale: float,
           route_groups: Optional[int] = None) -> tuple[Tensor, Tensor]:
    """Attention of q (b, heads, n, d) over its top-k entries of kNN layer ``layer`` of ``store``
    (found exactly, or within ``route_groups`` groups of entries per query: ``routed_search``).

    q is the query as scored against unit keys (its qk-norm gains folded in). Returns (out
    (b, heads, n, d), logsumexp (b, heads, n, 1) fp32 of the scores: the softmax's normaliser,
    which ``joint_softmax`` weighs against the local attention's; about float32's lowest value
    where the query found no valid entry). Gradients reach q; the store is constant. Shared by every
    store: only the retrieval differs.
    """
    b, heads, n, d = q.shape
    kv_heads = store.kv_heads
    grouped = fold_query_groups(q, kv_heads)  # query heads sharing a key/value head
    top_keys, top_values, found = store.retrieve(grouped, layer, top_k, route_groups)
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
    keys, values, valid = store.keys[layer, ..., :slots, :], store.values[layer, ..., :slots, :], store.reachable(slots)
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
