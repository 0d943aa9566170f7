"""RecurrentTrainerWrapper: a long sequence segment by segment, memories and states carried."""

from __future__ import annotations

import random
import warnings
from typing import Optional, Union

import torch
from torch import Tensor, nn

from .config import check_bool, typechecked
from .memory import Memories
from .transformer import BlockRecurrentTransformer


class RecurrentTrainerWrapper(nn.Module):
    """Mean loss over (b, k * max_seq_len + 1) tokens (k * max_seq_len inputs and their labels),
    processed as k segments of max_seq_len.

    Between segments, memories and states are carried detached (truncated backprop through time)
    every ``bptt_segments`` segments: with k > 1 the gradient of a segment's loss flows back
    through the memories and states (the states alone with ``detach_block_memories``) into the k - 1
    segments before it within its group, so the state can learn to hold information longer than one
    segment (at k times the activation memory).
    In training, ``xl_memories_dropout`` / ``state_dropout`` are the chances that a segment starts
    with no XL (and compressed) memories / with the initial states (the seed's regulariser); a kNN
    layer's store is kept through memory dropout.
    """

    @typechecked
    def __init__(self, transformer: BlockRecurrentTransformer, xl_memories_dropout: Union[int, float] = 0.0,
                 state_dropout: Union[int, float] = 0.0, *, bptt_segments: int = 1) -> None:
        super().__init__()
        for name, p in (("xl_memories_dropout", xl_memories_dropout), ("state_dropout", state_dropout)):
            if not isinstance(p, (int, float)) or not 0 <= p <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
        if bptt_segments < 1:
            raise ValueError(f"bptt_segments must be a positive int, got {bptt_segments}")
        config = transformer.config
        if config.recurrent_layers and config.max_seq_len == config.block_width and bptt_segments == 1:
            # TrainStep takes its config from a wrapper: built on one, it has warned here already
            warnings.warn(
                f"max_seq_len == block_width ({config.block_width}): one block per segment, and with "
                f"bptt_segments=1 the state a block writes is read only by the next segment, after the detach, "
                f"so the state write (to_write_q, to_update, its qk gains, the gate) gets no gradient and cannot "
                f"learn. Use several blocks per segment (max_seq_len a multiple >= 2 of block_width) or "
                f"backprop through several segments (bptt_segments >= 2)",
                stacklevel=3)  # the caller's line: 2 would name beartype's wrapper of __init__
        self.transformer = transformer
        self.bptt_segments = bptt_segments
        self.seq_len = transformer.max_seq_len
        self.xl_memories_dropout, self.state_dropout = xl_memories_dropout, state_dropout

    def forward(self, x: Tensor, return_memories_and_states: bool = False, *, xl_memories: Optional[Memories] = None,
                states: Optional[list[Tensor]] = None, labels: Optional[Tensor] = None, reset: Optional[Tensor] = None):
        """Mean loss over the segments (and the final memories and states if asked).

        Without ``labels``, x (b, k * max_seq_len + 1) holds the inputs and one extra token: each
        segment's targets are its inputs shifted by one, and the loss is the mean of the segments' means.
        labels: (b, k * max_seq_len) targets, ``ignore_index`` where a position has none (e.g. the
            padding after a document's end); x then holds the k * max_seq_len inputs only, and the
            loss is the mean over every labelled position of the call (0 if none is).
        reset: (b, k) bool: row r starts a new document at segment i (its memories and states are
            cleared first, as the model's ``reset``).
        """
        check_bool("return_memories_and_states", return_memories_and_states)
        segments = self.check_batch(x, labels, reset)
        self.check_recomputable(segments)
        labelled = None if labels is None else (labels != self.transformer.config.ignore_index).sum().clamp(min=1)
        loss = 0.0
        for i in range(segments):
            drop_memories, drop_states = self.draw_dropout()
            if drop_memories:  # the XL memories; a kNN store is kept (see Memories.without_recent)
                keeps_store = isinstance(xl_memories, Memories) and xl_memories.knn is not None
                xl_memories = xl_memories.without_recent(self.transformer.config) if keeps_store else None
            if drop_states:
                states = None
            start, end = i * self.seq_len, (i + 1) * self.seq_len
            detach = (i + 1) % self.bptt_segments == 0 or i == segments - 1
            row_reset = None if reset is None else reset[:, i]
            if labels is None:
                segment_loss, xl_memories, states = self.transformer(
                    x[:, start:end + 1], return_loss=True, xl_memories=xl_memories, states=states, reset=row_reset,
                    detach=detach)
                loss = loss + segment_loss / segments
            else:
                logits, xl_memories, states = self.transformer(
                    x[:, start:end], xl_memories=xl_memories, states=states, reset=row_reset, detach=detach)
                loss = loss + self.transformer.loss(logits, labels[:, start:end], reduction="sum") / labelled
        if return_memories_and_states:
            return loss, xl_memories, states
        return loss

    def check_batch(self, x: Tensor, labels: Optional[Tensor] = None, reset: Optional[Tensor] = None) -> int:
        """The number of segments k in x (see ``forward``); a clear error for any other shape, for
        labels outside the vocabulary (other than ignore_index) and for a reset of the wrong shape."""
        if not isinstance(x, Tensor) or x.ndim != 2:
            raise ValueError(f"x must be a (batch, k * max_seq_len{'' if labels is not None else ' + 1'}) tensor, "
                             f"got {getattr(x, 'shape', x)!r}")
        total, extra = x.shape[1], 0 if labels is not None else 1
        if total < self.seq_len + extra or (total - extra) % self.seq_len != 0:
            raise ValueError(
                f"x has {total} tokens per row; the wrapper needs k * max_seq_len{' + 1' * extra} = "
                f"k * {self.seq_len}{' + 1' * extra} for some k >= 1"
                + (" (one extra token for the last target)" if extra else " (with labels: the inputs only)"))
        segments = (total - extra) // self.seq_len
        if labels is not None:
            self.check_labels(labels, tuple(x.shape))
        if reset is not None and (not isinstance(reset, Tensor) or reset.dtype != torch.bool
                                  or tuple(reset.shape) != (x.shape[0], segments)):
            raise ValueError(f"reset must be a bool tensor of shape (batch, segments) = ({x.shape[0]}, {segments}), "
                             f"got {reset.dtype if isinstance(reset, Tensor) else type(reset).__name__} of shape "
                             f"{tuple(getattr(reset, 'shape', ()))}")
        return segments

    def check_labels(self, labels: Tensor, shape: tuple[int, ...]) -> None:
        """Labels must be integer targets of x's shape, each a token id or ignore_index (one host sync
        when on a GPU, as the model's check of x)."""
        config = self.transformer.config
        if not isinstance(labels, Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool \
                or tuple(labels.shape) != shape:
            raise ValueError(f"labels must be an integer tensor of x's shape {shape}, got "
                             f"{labels.dtype if isinstance(labels, Tensor) else type(labels).__name__} of shape "
                             f"{tuple(getattr(labels, 'shape', ()))}")
        if labels.numel() and not torch.compiler.is_compiling():
            targets = labels.masked_fill(labels == config.ignore_index, 0)  # ignored positions: a valid id
            low, high = torch.stack(torch.aminmax(targets)).tolist()  # one host sync
            if low < 0 or high >= config.num_tokens:
                raise ValueError(f"labels hold targets in [{low}, {high}]; allowed are 0..{config.num_tokens - 1} "
                                 f"(num_tokens) and ignore_index={config.ignore_index}")

    def check_recomputable(self, segments: int) -> None:
        """Refuse, before any work, a call whose backward could not recompute its first segment: under
        activation checkpointing each block is recomputed after every segment of the call has written
        to the kNN store, and the faiss store keeps the entries of only one model call for that."""
        model, config = self.transformer, self.transformer.config
        if (segments > 1 and model.activation_checkpointing and torch.is_grad_enabled() and config.knn_layers
                and config.knn_backend == "faiss"):
            raise ValueError(
                f'activation_checkpointing with knn_backend="faiss" takes one segment per wrapper call, got '
                f"{segments}: the backward recomputes each segment after all {segments} have written to the kNN "
                f"store, which keeps entries for one call's recomputation only. Pass one segment (max_seq_len + 1 "
                f"tokens) per call, carrying xl_memories and states (return_memories_and_states=True), or use "
                f'knn_backend="torch" or activation_checkpointing=False')

    def draw_dropout(self) -> tuple[bool, bool]:
        """Whether the next segment starts without XL memories, and with the initial states (drawn from
        Python's ``random``, memories first, as the seed does; never in eval mode)."""
        drop_memories = self.training and random.random() < self.xl_memories_dropout
        drop_states = self.training and random.random() < self.state_dropout
        return drop_memories, drop_states

    @torch.no_grad()
    def generate(self, prime: Tensor, length: int, **kwargs) -> Tensor:
        """New tokens (b, length - prime_len) after prime, of any length; see ``generation.generate``."""
        return self.transformer.generate(prime, length, **kwargs)
