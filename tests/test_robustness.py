"""Inputs and settings at the edges: odd token dtypes, empty batches, malformed memories, training
configurations where a part of the model cannot learn, sampling at extreme temperatures."""

from __future__ import annotations

import warnings

import pytest
import torch

from block_recurrent_transformer_pytorch import RecurrentTrainerWrapper, TrainStep

from .helpers import small_model, tokens


def test_a_state_write_that_cannot_learn_is_warned_about():
    """One block per segment with bptt over one segment: the written state is read only after the
    detach, so the write's parameters get no gradient (checked), and the wrapper says so once."""
    model = small_model(max_seq_len=8).train()
    with pytest.warns(UserWarning, match=r"max_seq_len == block_width \(8\).*bptt_segments >= 2"):
        wrapper = RecurrentTrainerWrapper(model)
    wrapper(tokens(2, 25)).backward()
    write = model.states[0]
    assert all(p.grad is None or not p.grad.any() for p in (write.to_write_q.weight, write.to_update.weight,
                                                              write.gate.bias))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to say: two blocks per segment, or bptt over segments
        TrainStep(RecurrentTrainerWrapper(small_model()), cuda_graph=False)
        RecurrentTrainerWrapper(model, bptt_segments=2)
