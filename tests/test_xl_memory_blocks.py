"""xl_memory_blocks: the XL memory holds the keys/values of the last N blocks, so a block's queries
reach N blocks back. Decoding and TrainStep compute what the full forward computes, as with the
seed's one block (segment by segment and resets: tests/test_model.py, parametrized by N)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from block_recurrent_transformer_pytorch import RecurrentTrainerWrapper
from block_recurrent_transformer_pytorch.generation import CachedDecoder, ReferenceDecoder

from .helpers import VOCAB, decode_each_step, flash_by_reference, run_segments, small_model, tokens
from .test_train_step import _assert_same_reading, _documents_batch

RECURRENT = dict(recurrent_layers=(1, 3), read_recurrent_layers=(1, 2))
PRESET = dict(memory_kv_from_inputs=True, rotary_dim=4, kv_heads=2, xpos_scale_base=10 ** 9, token_shift=True)


@pytest.mark.parametrize("blocks", [1, 2, 3])
def test_one_layer_reaches_exactly_its_memory_blocks_back(blocks):
    """One layer, no state: a change in block 1 moves the logits of blocks 1..1+N and none after."""
    model = small_model(depth=1, recurrent_layers=(), xl_memory_blocks=blocks)
    x = tokens(1, 8 * 6)
    reference, _, _ = run_segments(model, x, 16)
    changed = x.clone()
    changed[:, 8:16] = (changed[:, 8:16] + 1) % VOCAB
    logits, _, _ = run_segments(model, changed, 16)
    moved = [not torch.allclose(logits[:, 8 * i:8 * (i + 1)], reference[:, 8 * i:8 * (i + 1)], atol=1e-6)
             for i in range(6)]
    assert moved == [False] + [True] * (1 + blocks) + [False] * (4 - blocks)


@pytest.mark.parametrize("decoder_cls", [CachedDecoder, ReferenceDecoder])
@pytest.mark.parametrize("compressed, options", [(False, {}), (True, {}), (False, PRESET), (True, PRESET)])
def test_decoding_equals_the_full_forward(decoder_cls, compressed, options):
    model = small_model(use_compressed_mem=compressed, xl_memory_blocks=2, **RECURRENT, **options)
    x = tokens(2, 52)
    expected, _, _ = run_segments(model, x, 16)
    got = decode_each_step(decoder_cls(model, *model.prepare(2)), x, 5)
    torch.testing.assert_close(got, expected[:, 4:], rtol=1e-5, atol=1e-5)


def test_decoding_after_a_reset_equals_the_full_forward():
    """A row reset in the memories decoding starts from: its old blocks stay hidden until pushed out."""
    model = small_model(xl_memory_blocks=2, **RECURRENT, **PRESET)
    x = tokens(2, 48)
    _, memories, states = run_segments(model, x[:, :16], 16)
    reset = torch.tensor([True, False])
    expected, _, _ = run_segments(model, x[:, 16:], 16, memories, states, resets={0: reset})
    memories, states = model.prepare(2, memories, states, reset)
    got = decode_each_step(CachedDecoder(model, memories, states), x[:, 16:], 3)
    torch.testing.assert_close(got, expected[:, 2:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("compressed", [False, True])
def test_train_step_with_labels_and_resets_equals_the_wrapper(compressed):
    """Documents read row by row (labels with padding, per-row resets, dropout on): TrainStep's
    losses, gradients, memories and states are the wrapper's with memories of two blocks."""
    model = small_model(use_compressed_mem=compressed, xl_memory_blocks=2, **PRESET).train()
    wrapper = RecurrentTrainerWrapper(model, xl_memories_dropout=0.2, state_dropout=0.2)
    batches = [(x, dict(labels=labels, reset=reset)) for x, labels, reset in map(_documents_batch, (1, 2, 3))]
    mem, want_mem = _assert_same_reading(wrapper, batches, seed=7, loss_scale=0.5)
    assert mem.xl.shape[-2] == 16


def test_bad_values_and_memories_of_another_length_are_refused():
    with pytest.raises(ValueError, match="xl_memory_blocks must be a positive int, got 0"):
        small_model(xl_memory_blocks=0)
    with pytest.raises(ValueError, match=r"xl_memory_blocks=2 cannot serve knn_layers \(2,\)"):
        small_model(xl_memory_blocks=2, knn_layers=(2,))
    two, one = small_model(xl_memory_blocks=2), small_model()
    x = tokens(2, 16)
    _, memories, _ = two(x)
    assert memories.xl.shape[-2] == 16
    with pytest.raises(ValueError, match=r"length<=8"):
        one(x, xl_memories=memories)
    bad = dataclasses.replace(memories, xl=memories.xl[..., :12, :])
    with pytest.raises(ValueError, match="xl_memories.xl must hold whole blocks: a multiple of block_width=8"):
        two(x, xl_memories=bad)
    # one block: what a two-block memory holds after the first block, and carries on from
    whole, _, _ = two(x)
    _, first, states = two(x[:, :8])
    assert first.xl.shape[-2] == 8
    torch.testing.assert_close(two(x[:, 8:], xl_memories=first, states=states)[0], whole[:, 8:], rtol=1e-5, atol=1e-5)


def test_the_flash_path_after_resets_equals_the_boolean_mask(monkeypatch):
    """The flash path of ``MemoryRows`` (one variable-length call giving each row the blocks it sees), the
    kernels stood in by the reference on a CPU, over memories of three blocks with rows reset at
    different segments: the logits of the boolean mask the CPU path applies."""
    from block_recurrent_transformer_pytorch import attention

    model = small_model(xl_memory_blocks=3, use_flash_attn=True, **RECURRENT, **PRESET)  # through SDPA
    x = tokens(3, 96)
    resets = {1: torch.tensor([True, False, False]), 3: torch.tensor([False, True, False]),
              4: torch.tensor([True, False, True])}
    want, _, _ = run_segments(model, x, 16, resets=resets)
    calls = flash_by_reference(monkeypatch)
    unpatched = attention._sdpa_attention
    monkeypatch.setattr(attention, "_sdpa_attention", lambda *args, flash: unpatched(*args, flash=True))
    got, _, _ = run_segments(model.eval(), x, 16, resets=resets)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert {8, 16, 24, 32} <= {keys for call in calls for keys in call}  # the block alone, with one, two and three memory blocks
