"""Whole documents, one per batch row, read segment by segment.

The model carries memories and a recurrent state from one segment of a row to the next, and can only
reset them at the start of a call: so a row reads one document from its start, the rest of the segment
in which the document ends is padding, and the row's next segment starts the next document (with
``reset`` set for that row and segment).

A split's documents are the pieces between separator tokens, each document followed by one separator
(data/prepare.py, bench/corpora.py). Piece j reads the separator before its document as a
beginning-of-document input and predicts the document's tokens and its terminating separator: with
separators at s_0 < s_1 < ..., its inputs are data[a_j:e_j] and its targets data[a_j + 1:e_j + 1], with
(a_0, e_0) = (0, s_0), (a_j, e_j) = (s_{j-1}, s_j), and (s_last, len - 1) when the split does not end
with a separator. Every position 1..len-1 is so predicted exactly once, as in the stream evaluation
(training.evaluation.evaluate_split).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor

from block_recurrent_transformer_pytorch.memory import Memories

from .tokens import TokenSplit

Data = Union[Tensor, TokenSplit]
SCAN_CHUNK = 1 << 26  # tokens compared at a time: finding separators never holds a large split in memory


@dataclass
class DocumentBatch:
    """``segments`` segments of every row; positions are (rows, segments * segment) unless noted."""

    inputs: Tensor   # int64 token ids; padding holds the separator
    labels: Tensor   # int64 targets; ignore_index at padding
    reset: Tensor    # (rows, segments) bool: row r starts a new document at segment i
    offsets: Tensor  # int64 offset in its document of each label's token (a document's terminating
    #                  separator: the document's length); -1 at padding


def document_pieces(data: Data, separator: int) -> tuple[np.ndarray, np.ndarray]:
    """The pieces of data (see the module's docstring) as int64 arrays of first input positions a
    and ends e (piece j predicts positions a[j] + 1 .. e[j]); pieces that predict nothing left out.
    Reads data in chunks, so a memory-mapped split may be far larger than memory."""
    array, n = data.numpy(), len(data)
    separators = [np.flatnonzero(array[start:start + SCAN_CHUNK] == separator) + start
                  for start in range(0, n, SCAN_CHUNK)]
    tail = [n - 1] if n and array[-1] != separator else []  # a last document without its separator
    bounds = np.concatenate([[0], *separators, tail]).astype(np.int64)
    starts, ends = bounds[:-1], bounds[1:]
    keep = ends > starts
    return starts[keep], ends[keep]


def document_count(data: Data, separator: int) -> int:
    """The number of documents (pieces) of data, e.g. to share them out: range(rank, count, world)."""
    return len(document_pieces(data, separator)[0])


class DocumentStreams:
    """Reads whole documents of ``data`` (a 1-d CPU tensor of token ids, e.g. uint8 bytes, or a
    TokenSplit), one at a time in each of ``rows`` rows, ``segment`` tokens per segment.

    shuffle=True (training): a row that needs a document takes the next of a random order of
    ``documents`` (default: all): each epoch, a fresh order of them all, drawn from ``seed`` and the
    epoch's number alone (so that a run is reproducible and resumes exactly; epoch 0 is
    ``torch.randperm`` under ``torch.Generator().manual_seed(seed)``), of which this reader, stream
    ``stream`` of ``streams`` reading the same documents with the same seed (train.py: every
    micro-batch of every process), takes every streams-th place from place ``stream`` on. So the
    streams' n-th epochs read every document once between them, and which stream reads a document is
    drawn afresh each epoch; rows never run out. (With fewer documents than streams, see
    _epoch_order.) Not drawn with replacement: a long-document corpus is often
    dominated by a few huge files (linux_c's largest is 10% of it), and whether a run drew one of
    those twice or not at all moved held-out bits/byte by 0.05 between two seeds (bench/RESULTS.md,
    2026-11-30, sixth session).
    shuffle=False (evaluation): the ``documents`` (default: all, in order; e.g. range(rank, n, world)
    for one rank's share) are each read exactly once, handed out in order to whichever row needs one
    next (rows 0..rows-1 at each segment); a row with none left yields padding only.
    """

    def __init__(self, data: Data, separator: int, rows: int, segment: int, *, shuffle: bool,
                 seed: Optional[int] = None, stream: int = 0, streams: int = 1, ignore_index: int = -100,
                 documents: Optional[Sequence[int]] = None) -> None:
        if not isinstance(data, (Tensor, TokenSplit)) or isinstance(data, Tensor) and (
                data.dim() != 1 or data.device.type != "cpu" or data.dtype == torch.bool
                or data.is_floating_point() or data.is_complex()):
            raise TypeError(f"data must be a 1-d CPU integer tensor or a TokenSplit, got {_describe(data)}")
        vocab = 256 if isinstance(data, Tensor) and data.dtype == torch.uint8 else getattr(data, "vocab_size", None)
        if not isinstance(separator, int) or isinstance(separator, bool):
            raise TypeError(f"separator must be an int token id, got {separator!r}")
        if separator < 0 or vocab is not None and separator >= vocab:
            allowed = f"the data's vocabulary (0..{vocab - 1})" if vocab is not None else "token ids (>= 0)"
            raise ValueError(f"separator={separator} is outside {allowed}")
        for name, value in (("rows", rows), ("segment", segment)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}={value!r}: must be an int >= 1")
        if shuffle and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise ValueError(f"shuffle=True needs seed, an int >= 0 (so that the orders are reproducible and "
                             f"resumable), got seed={seed!r}")
        for name, value in (("stream", stream), ("streams", streams)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name}={value!r}: must be an int")
        if not 0 <= stream < streams:
            raise ValueError(f"stream={stream} must be in 0..streams - 1 (streams={streams})")
        self.data, self.separator, self.rows, self.segment = data, separator, rows, segment
        self.shuffle, self.seed, self.stream, self.streams = shuffle, seed, stream, streams
        self.ignore_index = ignore_index
        self.starts, ends = document_pieces(data, separator)
        if not len(self.starts):
            raise ValueError(f"data: {len(data)} tokens hold no prediction; documents need at least 2 tokens")
        self.lengths = ends - self.starts
        # The split's first piece starts inside a document (not at a separator): its first target is at
        # offset 1 of that document, as in training.evaluation.document_offsets.
        self.head_offset = int(data.numpy()[0] != separator)
        self.pool = list(range(len(self.starts))) if documents is None else [int(j) for j in documents]
        if any(not 0 <= j < len(self.starts) for j in self.pool):
            raise ValueError(f"documents must be indices in 0..{len(self.starts) - 1}, got "
                             f"{[j for j in self.pool if not 0 <= j < len(self.starts)][:5]} among them")
        if shuffle and not self.pool:
            raise ValueError("documents is empty: shuffle=True has nothing to draw from")
        self.piece = [-1] * rows   # per row: the piece being read (-1: none)
        self.offset = [0] * rows   # per row: the piece's inputs read so far
        # the documents in the order they are handed out, and how many have been: shuffle=False, the
        # pool once; shuffle=True, this stream's part of epoch ``epoch``'s order (-1: none drawn yet;
        # state_dict keeps the epoch's number, and the order is drawn again from it on load)
        self.order = [] if shuffle else self.pool
        self.queue = 0
        self.epoch = -1

    def __len__(self) -> int:
        """The number of documents (pieces) of the split, whatever ``documents`` selects."""
        return len(self.starts)

    @property
    def exhausted(self) -> bool:
        """shuffle=False: every document has been read completely (shuffle=True: never)."""
        return not self.shuffle and self.queue == len(self.order) and all(j < 0 for j in self.piece)

    def _take_document(self, row: int) -> bool:
        """Give row its next document; False when none is left (shuffle=False)."""
        if self.queue == len(self.order):
            if not self.shuffle:
                return False
            self.epoch, self.queue = self.epoch + 1, 0
            self.order = self._epoch_order(self.epoch)
        self.piece[row], self.queue = self.order[self.queue], self.queue + 1
        self.offset[row] = 0
        return True

    def _pool_crc(self) -> int:
        """A checksum of the documents selected, in their order (state_dict keeps it, not the list)."""
        return zlib.crc32(np.asarray(self.pool, dtype=np.int64).tobytes())

    def _epoch_order(self, epoch: int) -> list[int]:
        """This stream's documents in epoch ``epoch``: every streams-th place of the epoch's random order
        of the pool, from place ``stream`` on. The order depends on the seed and the epoch alone (a large
        odd step between the draws' seeds, so that no small seed's epochs repeat another seed's).

        With fewer documents than streams there are only as many places as documents: stream s takes
        place s mod places of draw s // places (its lap), so that the streams sharing a place read
        different orders rather than copies of one another's batches."""
        places = min(self.streams, len(self.pool))
        laps, lap = -(-self.streams // places), self.stream // places
        generator = torch.Generator().manual_seed(self.seed + (epoch * laps + lap) * 1_000_003)
        order = torch.randperm(len(self.pool), generator=generator).tolist()
        return [self.pool[i] for i in order[self.stream % places::places]]

    def next(self, segments: int) -> DocumentBatch:
        """The next ``segments`` segments of every row."""
        if not isinstance(segments, int) or isinstance(segments, bool) or segments < 1:
            raise ValueError(f"segments={segments!r}: must be an int >= 1")
        # Per segment and row: the data position of its first input, its number of predictions (0:
        # padding only), its first label's offset in the document and whether it starts the document.
        # The tokens are then gathered in one indexing of data.
        plan = []
        for _ in range(segments):
            for row in range(self.rows):
                if self.piece[row] < 0 and not self._take_document(row):
                    plan.append((0, 0, 0, False))
                    continue
                j, done = self.piece[row], self.offset[row]
                count = min(self.segment, int(self.lengths[j]) - done)
                plan.append((int(self.starts[j]) + done, count, done + (self.head_offset if j == 0 else 0), done == 0))
                self.offset[row] += count
                if self.offset[row] == self.lengths[j]:
                    self.piece[row] = -1  # the rest of this segment is padding; the next starts a document
        starts, counts, first_offsets, reset = (torch.tensor(column) for column in zip(*plan))
        shape = (segments, self.rows)
        steps = torch.arange(self.segment + 1)
        index = (starts.view(*shape, 1) + steps).clamp_(max=len(self.data) - 1)
        tokens = self.data[index].long()  # (segments, rows, segment + 1): inputs, and labels one later
        valid = steps[:-1] < counts.view(*shape, 1)
        offsets = first_offsets.view(*shape, 1) + steps[:-1]

        def rows_first(x: Tensor, fill: int) -> Tensor:
            return torch.where(valid, x, fill).transpose(0, 1).reshape(self.rows, segments * self.segment)

        return DocumentBatch(inputs=rows_first(tokens[..., :-1], self.separator),
                             labels=rows_first(tokens[..., 1:], self.ignore_index),
                             reset=reset.view(shape).T.contiguous(),
                             offsets=rows_first(offsets, -1))

    def state_dict(self) -> dict:
        """Where every row is, how far the current order has been handed out and, shuffled, the epoch's
        number (its order is drawn again from it) and what it was drawn for (torch.save-able,
        weights_only=True)."""
        return {"documents": len(self), "rows": self.rows, "shuffle": self.shuffle, "piece": list(self.piece),
                "offset": list(self.offset), "queue": self.queue, "pool": len(self.pool),
                "pool_crc": self._pool_crc(), "seed": self.seed, "stream": self.stream, "streams": self.streams,
                "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where ``state_dict`` was taken, on the same data, rows, documents, seed and
        stream (see check_state)."""
        self.check_state(state)
        self.piece, self.offset, self.queue = list(state["piece"]), list(state["offset"]), state["queue"]
        if self.shuffle:
            self.epoch = state["epoch"]
            self.order = self._epoch_order(self.epoch) if self.epoch >= 0 else []

    def check_state(self, state: dict) -> None:
        """A ValueError naming what differs if ``state`` was not taken from streams like these, or was
        taken by a version before 2026-11-30's seventh session (its orders came from a generator's state,
        which cannot be redrawn here); nothing changes either way."""
        if self.shuffle and "epoch" not in state:
            raise ValueError("the state was taken by a version that drew its orders from a generator's state: "
                             "these streams cannot redraw them (start the rows afresh)")
        for name, what, value in (("documents", "documents in the split", len(self)), ("rows", "rows", self.rows),
                                  ("shuffle", "shuffle", self.shuffle),
                                  ("pool", "documents selected (argument documents)", len(self.pool)),
                                  ("pool_crc", "checksum of the documents selected", self._pool_crc()),
                                  ("seed", "seed", self.seed), ("stream", "stream", self.stream),
                                  ("streams", "streams (micro-batches times processes in train.py)", self.streams)):
            if state.get(name, value) != value:  # (sequential states before the seventh session: no pool)
                raise ValueError(f"the state was taken from streams with {what} {state[name]!r}, these have "
                                 f"{value!r}: it continues only on the same split, rows, documents, seed and streams")


class DocumentRows:
    """train.py's --documents reader: per micro-batch, a ``DocumentStreams`` over the train split and
    the memories and states its rows ended the last step with (detached), to start the next one from.

    Every micro-batch of every process is one stream of the same documents and seed: in each of its
    epochs, each reads its own places of that epoch's random order of them all (DocumentStreams). So
    the streams' n-th epochs read every document once between them, and which stream reads a
    document is drawn afresh each epoch; as the streams go through their epochs at their own pace,
    over a run every document is read about as often as any other, whatever its length.
    """

    def __init__(self, data: Data, separator: int, rows: int, segment: int, segments: int, micro_batches: int,
                 ignore_index: int, seed: int, process: int = 0, processes: int = 1) -> None:
        if not 0 <= process < processes:
            raise ValueError(f"process={process} must be in 0..processes - 1 (processes={processes}): the rank")
        if micro_batches < 1:
            raise ValueError(f"micro_batches={micro_batches} must be >= 1 (--grad-accum)")
        self.streams = [DocumentStreams(data, separator, rows, segment, shuffle=True, seed=seed,
                                        stream=process * micro_batches + i, streams=processes * micro_batches,
                                        ignore_index=ignore_index)
                        for i in range(micro_batches)]
        self.segments = segments
        self.carried: list[tuple[Optional[Memories], Optional[list[Tensor]]]] = [(None, None)] * micro_batches

    def next(self, micro: int) -> tuple[DocumentBatch, Optional[Memories], Optional[list[Tensor]]]:
        """Micro-batch ``micro``'s next segments, and the memories and states to start them from."""
        return self.streams[micro].next(self.segments), *self.carried[micro]

    def carry(self, micro: int, memories: Memories, states: list[Tensor]) -> None:
        """Keep what micro-batch ``micro`` ended with, for its next step."""
        self.carried[micro] = (memories, states)

    def state_dict(self) -> dict:
        """The streams' positions and the carried memories and states (on the CPU), for an exact resume."""
        return {"streams": [s.state_dict() for s in self.streams],
                "carried": [(None if m is None else m.to("cpu"), None if s is None else [t.cpu() for t in s])
                            for m, s in self.carried]}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        """Continue where ``state_dict`` was taken, the carried memories and states moved to device."""
        if len(state["streams"]) != len(self.streams):
            raise ValueError(f"the state holds {len(state['streams'])} micro-batches' streams, this run has "
                             f"{len(self.streams)} (--grad-accum): they cannot continue")
        for streams, saved in zip(self.streams, state["streams"]):  # all checked first: none loaded if one fails
            streams.check_state(saved)
        for streams, saved in zip(self.streams, state["streams"]):
            streams.load_state_dict(saved)
        self.carried = [(None if m is None else m.to(device), None if s is None else [t.to(device) for t in s])
                        for m, s in state["carried"]]


def _describe(value: object) -> str:
    """A short description of a value of the wrong kind, for error messages."""
    if isinstance(value, Tensor):
        return f"a {value.dim()}-d {value.dtype} tensor on {value.device}"
    return type(value).__name__
