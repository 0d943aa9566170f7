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
    """Mean loss over (b, k * max_seq_len + 1) tokens, processed as k segments of max_seq_len.

    Between segments, memories and states are carried detached (truncated backprop through time)
    every ``bptt_segments`` segments: with k > 1 the gradient of a segment's loss flows back
    through the memories and states into the k - 1 segments before it within its group, so the
    state can learn to hold information longer than one segment (at k times the activation memory).
    In training, ``xl_memories_dropout`` / ``state_dropout`` are the chances that a segment starts
    with no memories / with the initial states (the seed's regulariser).
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
                states: Optional[list[Tensor]] = None):
        """Mean loss over the segments (and the final memories and states if asked)."""
        check_bool("return_memories_and_states", return_memories_and_states)
        segments = self.count_segments(x)
        self.check_recomputable(segments)
        loss = 0.0
        for i in range(segments):
            drop_memories, drop_states = self.draw_dropout()
            if drop_memories:
                xl_memories = None
            if drop_states:
                states = None
            start = i * self.seq_len
            segment_loss, xl_memories, states = self.transformer(
                x[:, start:start + self.seq_len + 1], return_loss=True, xl_memories=xl_memories, states=states,
                detach=(i + 1) % self.bptt_segments == 0 or i == segments - 1,
            )
            loss = loss + segment_loss / segments
        if return_memories_and_states:
            return loss, xl_memories, states
        return loss

    def count_segments(self, x: Tensor) -> int:
        """k for x of shape (batch, k * max_seq_len + 1); a clear error for any other shape."""
        if not isinstance(x, Tensor) or x.ndim != 2:
            raise ValueError(f"x must be a (batch, k * max_seq_len + 1) tensor, got {getattr(x, 'shape', x)!r}")
        total = x.shape[1]
        if total < self.seq_len + 1 or (total - 1) % self.seq_len != 0:
            raise ValueError(
                f"x has {total} tokens per row; the wrapper needs k * max_seq_len + 1 = "
                f"k * {self.seq_len} + 1 for some k >= 1 (one extra token for the last target)"
            )
        return (total - 1) // self.seq_len

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
        """Whether the next segment starts without memories, and with the initial states (drawn from
        Python's ``random``, memories first, as the seed does; never in eval mode)."""
        drop_memories = self.training and random.random() < self.xl_memories_dropout
        drop_states = self.training and random.random() < self.state_dropout
        return drop_memories, drop_states

    @torch.no_grad()
    def generate(self, prime: Tensor, length: int, **kwargs) -> Tensor:
        """New tokens (b, length - prime_len) after prime, of any length; see ``generation.generate``."""
        return self.transformer.generate(prime, length, **kwargs)
