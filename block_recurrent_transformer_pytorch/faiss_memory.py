"""The kNN store on the CPU, searched by faiss (``knn_backend="faiss"``): for stores larger than
GPU memory. It retrieves exactly what the torch store (knn_memory.py) retrieves.

Storage is memorizing-transformers-pytorch's ``KNNMemory`` (0.4.1): per batch row and key/value
head, a faiss index of the keys and a numpy memmap of the keys/values. Its known defects, and how
each is guarded here:

- When an index holds more than ``max_memories`` entries it wipes it wholesale (no FIFO), and its
  memmap offsets then no longer match the index ids: retrieval silently returns wrong entries.
  -> No index is ever filled: each kNN layer's store is a ring of shards, each a ``KNNMemory`` of
  ``shard_size`` entries; writes go to the newest shard, and a shard is cleared for reuse only once
  everything it holds is older than the store's capacity. Eviction is FIFO a shard at a time.
- Its memmap files are never deleted. -> They live in a temporary directory of ours, deleted by
  ``close()``, and when the store is garbage-collected or the interpreter exits (weakref.finalize).
- Its start-of-sequence clearing (on a token id) never fires. -> Not used: a per-row reset is ours
  (below), applied when the model is called with ``reset``.
- It imports ``einops_exts`` without declaring it, and declares ``faiss-gpu`` (~1.2 GB of CUDA
  libraries). -> The ``faiss`` extra declares einops-exts, joblib, filelock and faiss-cpu; the
  package itself is installed with ``--no-deps`` (see README).
- It searches an HNSW graph (approximate), and its ``search`` returns neither scores nor ids.
  -> Each index is swapped for an exact ``IndexFlatIP`` and searched directly: merging the
  shards' top-k needs the scores, and hiding entries outside a row's window needs the ids.
- Its joblib parallelism would ship every faiss index to worker processes at each write.
  -> ``multiprocessing=False``.

Exact FIFO over shards: the ring holds one shard more than the capacity needs, and a search sees
only each row's window, the newest ``capacity`` entries written since its last reset (a faiss
``IDSelectorRange`` over the shard ids at the window's edges). So retrieval matches the torch store
entry for entry; only the storage is reclaimed a shard at a time.

The store is one mutable timeline shared by the ``FaissKNNMemory`` values that the model passes
around in ``Memories``: each is a view (how many entries were written when it was made, and where
each row's current document starts). A view sees exactly its own entries even after the store has
moved on (until they are evicted: then a clear error); a write from an older view must repeat what
was written after it (activation checkpointing recomputes a block: a no-op) — a different
continuation (branching) is refused. Eager only: the store is searched by faiss on the host.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .config import BlockRecurrentConfig

try:  # optional: pip install "block-recurrent-transformer-pytorch[faiss]" (see INSTALL)
    import faiss
    from memorizing_transformers_pytorch.knn_memory import KNNMemory as ShardMemory
except ImportError as error:  # raised with the install hint when a faiss store is asked for
    faiss = ShardMemory = None
    IMPORT_ERROR: Optional[ImportError] = error
else:
    IMPORT_ERROR = None

INSTALL = ('pip install "block-recurrent-transformer-pytorch[faiss]" && '
           "pip install --no-deps memorizing-transformers-pytorch==0.4.1")
SHARDS = 8  # shards per capacity: storage beyond the capacity is one shard (+ slack), 1/SHARDS of it


def require_faiss() -> None:
    """Raise an ImportError with the install command unless faiss and memorizing-transformers import."""
    if IMPORT_ERROR is not None:
        raise ImportError(f'knn_backend="faiss" needs faiss-cpu and memorizing-transformers-pytorch '
                          f"({IMPORT_ERROR}): {INSTALL} (--no-deps: it declares faiss-gpu, ~1.2 GB of CUDA "
                          f"libraries, where faiss-cpu serves)") from IMPORT_ERROR


EAGER_ONLY = ('knn_backend="faiss" runs eagerly only (its store is searched by faiss on the CPU): do not '
              'torch.compile a model with it, or use knn_backend="torch"')


def eager_only(fn: Callable) -> Callable:
    """Keep torch.compile out of ``fn``: with fullgraph=True compiling refuses, naming EAGER_ONLY as
    the reason; without it, ``fn`` runs eagerly between the compiled graphs (a graph break)."""
    try:
        return torch.compiler.disable(fn, reason=EAGER_ONLY)
    except TypeError:  # torch before 2.7: no reason to give
        return torch.compiler.disable(fn)


def default_shard_size(capacity: int, block_width: int) -> int:
    """Whole blocks, about capacity / SHARDS: each write lands in one shard, a few shards per store."""
    return block_width * math.ceil(capacity / block_width / SHARDS)


class FaissStore:
    """The storage every ``FaissKNNMemory`` view of one run shares: per kNN layer, a ring of shards.

    Entries are numbered by position in the order written (the same for every row: each write
    covers all rows). Shard slot ``j`` holds positions ``starts[j] .. starts[j] + shard_size``; in
    its faiss indexes an entry's id is its offset in the shard (every row gets every write).
    slack: positions a view may lag behind the latest write and still be searched (the ring grows
    by it): a model call's blocks are recomputed by activation checkpointing after the call's writes.
    """

    def __init__(self, layers: int, batch: int, kv_heads: int, dim_head: int, capacity: int, shard_size: int,
                 slack: int = 0) -> None:
        require_faiss()
        if shard_size < 1 or capacity < 1 or slack < 0:
            raise ValueError(f"need capacity >= 1, shard_size >= 1, slack >= 0; got {capacity}, {shard_size}, {slack}")
        self.layers, self.batch, self.kv_heads, self.dim_head = layers, batch, kv_heads, dim_head
        self.capacity, self.shard_size = capacity, shard_size
        # a shard is reused only when all it held is past the capacity (and the slack) of the newest write
        self.num_shards = math.ceil((capacity + slack) / shard_size) + 1
        self.shards: list[list[Optional[ShardMemory]]] = [[None] * self.num_shards for _ in range(layers)]
        self.starts: list[Optional[int]] = [None] * self.num_shards
        self.written = 0
        self.directory = Path(tempfile.mkdtemp(prefix="brt-knn-"))  # $TMPDIR: put it on a large disk
        self.closed = False
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.directory, True)

    @property
    def oldest(self) -> int:
        """The first position still stored."""
        return min((s for s in self.starts if s is not None), default=0)

    def close(self) -> None:
        """Drop every shard and delete the memmap files (also done when the store is garbage-collected)."""
        self.shards, self.closed = [], True
        self._finalizer()

    def _open(self) -> None:
        """Raise a clear error once the store is closed (its files are gone)."""
        if self.closed:
            raise RuntimeError("this faiss kNN store was closed: start afresh (xl_memories=None)")

    def _start_shard(self, slot: int) -> None:
        """Make slot ``slot`` an empty shard for the positions from ``written`` on."""
        for layer in range(self.layers):
            shard = self.shards[layer][slot]
            if shard is None:
                shard = ShardMemory(self.dim_head, max_memories=self.shard_size, num_indices=self.batch * self.kv_heads,
                                    memmap_filename=str(self.directory / f"layer{layer}.shard{slot}.memmap"),
                                    multiprocessing=False)
                for knn in shard.knns:  # exact search instead of its HNSW graph (emptied by its reset)
                    knn.index = faiss.IndexFlatIP(self.dim_head)
                self.shards[layer][slot] = shard
            else:
                shard.clear()  # everything it held is past the capacity: a whole shard evicted
        self.starts[slot] = self.written

    def _spans(self, start: int, n: int) -> Iterator[tuple[int, int, int, int, int]]:
        """Positions start .. start + n a shard at a time: (slot, shard number (start // shard_size),
        offset in the shard, offset in the n positions, count)."""
        done = 0
        while done < n:
            number, offset = divmod(start + done, self.shard_size)
            take = min(n - done, self.shard_size - offset)
            yield number % self.num_shards, number, offset, done, take
            done += take

    def append(self, kv: Tensor) -> None:
        """Write kv (layers, batch * kv_heads, n, 2, d), float32 on the CPU, at the next n positions."""
        self._open()
        for slot, _, offset, done, take in self._spans(self.written, kv.shape[2]):
            if offset == 0:
                self._start_shard(slot)
            for layer, shard in enumerate(shards[slot] for shards in self.shards):
                # its wholesale wipe triggers past max_memories: never get there
                assert all(knn.index.ntotal + take <= self.shard_size for knn in shard.knns)
                if self.batch:  # memorizing-transformers fails to add to no index at all (an empty batch)
                    shard.add(kv[layer, :, done:done + take])
            self.written += take

    def read(self, start: int, n: int) -> Optional[np.ndarray]:
        """The entries at positions start .. start + n as written, (layers, batch * kv_heads, n, 2, d);
        None if some were evicted."""
        self._open()
        out = np.empty((self.layers, self.batch * self.kv_heads, n, 2, self.dim_head), dtype=np.float32)
        for slot, number, offset, done, take in self._spans(start, n):
            if self.starts[slot] != number * self.shard_size:
                return None
            for layer in range(self.layers):
                out[layer, :, done:done + take] = self.shards[layer][slot].db[:, offset:offset + take]
        return out

    def search(self, q: np.ndarray, layer: int, top_k: int, windows: list[tuple[int, int]]
               ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k of q (batch, kv_heads, m, d) among row r's positions ``windows[r]`` (lo, hi) of
        kNN layer ``layer``. Returns (entries (batch, kv_heads, m, top_k, 2, d): key and value, zero
        where none was found; found (batch, kv_heads, m, top_k) bool), best first."""
        self._open()
        if any(hi > lo and lo < self.oldest for lo, hi in windows):
            raise RuntimeError("these memories are too old: the faiss kNN store has since evicted entries they "
                               "need (it holds one timeline; continue from the latest memories)")
        b, heads, m, _ = q.shape
        scores = np.full((b, heads, self.num_shards, m, top_k), -np.inf, dtype=np.float32)
        ids = np.zeros((b, heads, self.num_shards, m, top_k), dtype=np.int64)
        for slot, start in enumerate(self.starts):
            if start is None:
                continue
            stored = min(self.shard_size, self.written - start)
            for row, (lo, hi) in enumerate(windows):
                first, end = max(lo - start, 0), min(hi - start, stored)  # the row's window in this shard
                if first >= end:
                    continue
                # a selector only at a window's edge: a whole shard is searched on faiss's fast path
                selector = None if (first, end) == (0, stored) else faiss.IDSelectorRange(first, end)
                params = None if selector is None else faiss.SearchParameters(sel=selector)
                for head in range(heads):
                    index = self.shards[layer][slot].knns[row * heads + head].index
                    distances, found_ids = index.search(np.ascontiguousarray(q[row, head]), top_k, params=params)
                    scores[row, head, slot] = np.where(found_ids >= 0, distances, -np.inf)
                    ids[row, head, slot] = np.maximum(found_ids, 0)
        # merge the shards' top-k: (b, heads, m, shards * top_k) candidates
        scores = torch.from_numpy(scores).permute(0, 1, 3, 2, 4).flatten(-2)
        best, order = scores.topk(top_k, dim=-1)
        found = (best > float("-inf")).numpy()
        slots = (order // top_k).numpy()
        ids = torch.from_numpy(ids).permute(0, 1, 3, 2, 4).flatten(-2).gather(-1, order).numpy()
        entries = np.zeros((b, heads, m, top_k, 2, self.dim_head), dtype=np.float32)
        for slot in np.unique(slots[found]):
            db = self.shards[layer][slot].db
            for row in range(b):
                for head in range(heads):
                    pick = found[row, head] & (slots[row, head] == slot)
                    entries[row, head][pick] = db[row * heads + head, ids[row, head][pick]]
        return entries, found


@dataclass(frozen=True, eq=False)
class FaissKNNMemory:
    """A ``KNNStore`` in a faiss ``FaissStore``: the store as it was after ``end`` positions were
    written. ``valid_from[r]``: the first position of row r's current document (a reset moves it)."""

    store: FaissStore
    end: int
    valid_from: tuple[int, ...]

    @property
    def kv_heads(self) -> int:
        """Key/value heads per layer."""
        return self.store.kv_heads

    @eager_only
    def write(self, k: Tensor, v: Tensor, rows_valid: Optional[Tensor] = None) -> "FaissKNNMemory":
        """``KNNStore.write``: keys stored as unit vectors, float32, detached, on the CPU. A block that
        is not a row's current document (``rows_valid`` False) is stored but starts the row after it."""
        store, n = self.store, k.shape[-2]
        kv = torch.stack((F.normalize(k.detach().float(), dim=-1), v.detach().float()), dim=-2).cpu()
        kv = kv.flatten(1, 2)  # (layers, b * kv_heads, n, 2, d): a shard's indexes are per row and head
        if self.end == store.written:
            store.append(kv)
        elif not self._rewrites(kv):
            raise RuntimeError("the faiss kNN store has moved on since these memories were made and holds one "
                               "timeline: continue from the latest memories, or use knn_backend=\"torch\" to "
                               "branch from old ones")
        # else: the same block again (a recomputation): nothing to write
        valid_from = self.valid_from
        if rows_valid is not None:
            valid_from = tuple(start if ok else self.end + n for start, ok in zip(valid_from, rows_valid.tolist()))
        return FaissKNNMemory(store, self.end + n, valid_from)

    def _rewrites(self, kv: Tensor) -> bool:
        """Whether kv is what the store holds right after this (older) view: a recomputed block."""
        n = kv.shape[2]
        stored = self.store.read(self.end, n) if self.end + n <= self.store.written else None
        return stored is not None and torch.allclose(torch.from_numpy(stored), kv, rtol=1e-5, atol=1e-6)

    @eager_only
    def reset(self, rows: Tensor) -> "FaissKNNMemory":
        """``KNNStore.reset``: the rows' documents start at the next write; nothing older is searched."""
        return FaissKNNMemory(self.store, self.end, tuple(
            self.end if reset else start for start, reset in zip(self.valid_from, rows.tolist())))

    @eager_only
    def retrieve(self, q: Tensor, layer: int, top_k: int,
                 route_groups: Optional[int] = None) -> tuple[Tensor, Tensor, Tensor]:
        """``KNNStore.retrieve``: faiss searches each row's window (its newest ``capacity`` entries
        since its reset) on the CPU; the entries come back on q's device, in q's dtype. Exact only
        (the config refuses routed retrieval with this store)."""
        if route_groups is not None:
            raise ValueError(f"the faiss kNN store searches exactly: route_groups must be None, got {route_groups!r}")
        windows = [(max(self.end - self.store.capacity, start), self.end) for start in self.valid_from]
        entries, found = self.store.search(q.detach().float().cpu().numpy(), layer, top_k, windows)
        entries = torch.from_numpy(entries).to(device=q.device, dtype=q.dtype)
        return entries[..., 0, :], entries[..., 1, :], torch.from_numpy(found).to(q.device)

    @eager_only
    def check(self, config: BlockRecurrentConfig, batch: int, device: torch.device) -> None:
        """Raise a clear error unless the store fits the config and batch (on the CPU, it serves any device)."""
        if config.knn_backend != "faiss":
            raise ValueError(f"xl_memories holds a faiss kNN store, but the model has "
                             f"knn_backend={config.knn_backend!r}")
        store = self.store
        got = (store.layers, store.batch, store.kv_heads, store.dim_head, store.capacity)
        expected = (len(config.knn_layers), batch, config.kv_heads, config.dim_head, config.knn_memory_size)
        if got != expected:
            raise ValueError(f"xl_memories.knn must hold (knn layers, batch, kv_heads, dim_head, knn_memory_size) = "
                             f"{expected}, got {got}")
        store._open()

    def close(self) -> None:
        """Delete the store's files now (every view of it becomes unusable)."""
        self.store.close()


@eager_only
def empty_faiss_memory(config: BlockRecurrentConfig, batch: int, shard_size: Optional[int] = None) -> FaissKNNMemory:
    """An empty faiss store for the config's kNN layers, shards of ``shard_size`` entries (default:
    ``default_shard_size``); views may lag a model call (max_seq_len positions) behind it."""
    shard_size = shard_size or default_shard_size(config.knn_memory_size, config.block_width)
    store = FaissStore(len(config.knn_layers), batch, config.kv_heads, config.dim_head, config.knn_memory_size,
                       shard_size, slack=config.max_seq_len)
    return FaissKNNMemory(store, 0, (0,) * batch)
