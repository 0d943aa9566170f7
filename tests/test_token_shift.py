"""token_shift: half the channels of each attention's normed input come from the token before
(zeros at a block's start). A function of the block alone, so memories made from its keys/values or
projected afresh from their inputs, cached decoding and TrainStep all compute what the full forward
does (causality and segment by segment: tests/test_model.py); no parameters, so the initial draw is that of the
model without it."""

from __future__ import annotations

import pytest
import torch

from block_recurrent_transformer_pytorch.generation import CachedDecoder, ReferenceDecoder

from .helpers import (assert_decoding_equals_the_full_forward, assert_projected_memories_equal_cached,
                      assert_train_step_equals_wrapper_backward, decode_each_step, small_model, tokens)

RECURRENT = dict(recurrent_layers=(1, 3), read_recurrent_layers=(1, 2))
PRESET = dict(memory_kv_from_inputs=True, rotary_dim=4, kv_heads=2, xpos_scale_base=10 ** 9)


def test_shift_moves_the_second_half_one_token_later():
    attn = small_model(token_shift=True).layers[0][0]
    x = torch.randn(2, 5, 32)
    previous = torch.randn(2, 1, 32)
    for before, first in ((None, torch.zeros(2, 16)), (previous, previous[:, 0, 16:])):
        shifted = attn.shift(x, before)
        torch.testing.assert_close(shifted[..., :16], x[..., :16], rtol=0, atol=0)
        torch.testing.assert_close(shifted[:, 1:, 16:], x[:, :-1, 16:], rtol=0, atol=0)
        torch.testing.assert_close(shifted[:, 0, 16:], first, rtol=0, atol=0)
    assert attn.shift(x[:, :0], None).shape == (2, 0, 32)  # an empty memory stays empty
    plain = small_model().layers[0][0]
    assert plain.shift(x, previous) is x


def test_the_option_keeps_the_initial_draw_and_changes_the_logits():
    off, on = small_model(3, **RECURRENT), small_model(3, token_shift=True, **RECURRENT)
    for (name, a), (_, b) in zip(off.state_dict().items(), on.state_dict().items()):
        assert torch.equal(a, b), name
    x = tokens(2, 16)
    assert not torch.allclose(on(x)[0], off(x)[0], atol=1e-3)


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("blocks", [1, 3])
def test_memories_projected_from_inputs_equal_the_cached_ones(compressed, blocks):
    """memory_kv_from_inputs projects the memory's inputs afresh, shifted as the block shifted them
    (each of the memory's blocks on its own): the same logits and cached keys/values as the model
    that keeps what the block computed (rows reset at different segments)."""
    cached = small_model(use_compressed_mem=compressed, token_shift=True, kv_heads=2, xl_memory_blocks=blocks,
                         **RECURRENT)
    projected = small_model(use_compressed_mem=compressed, token_shift=True, kv_heads=2, memory_kv_from_inputs=True,
                            xl_memory_blocks=blocks, **RECURRENT)
    assert_projected_memories_equal_cached(cached, projected)


@pytest.mark.parametrize("decoder_cls", [CachedDecoder, ReferenceDecoder])
@pytest.mark.parametrize("compressed, options", [(False, {}), (True, {}), (False, PRESET), (True, PRESET)])
@pytest.mark.parametrize("prefill", [1, 5, 8])
def test_decoding_equals_the_full_forward(decoder_cls, compressed, options, prefill):
    """Token by token after a prefill that ends mid-block, at a block's end or after its first token:
    the cache carries each layer's input of the latest token into the next token's shift, and
    shifts in zeros at every block's start."""
    model = small_model(use_compressed_mem=compressed, token_shift=True, **RECURRENT, **options)
    assert_decoding_equals_the_full_forward(model, decoder_cls, prefill)


@pytest.mark.parametrize("shift", [False, True])
def test_a_step_run_and_rewound_leaves_the_next_step_as_it_was(shift):
    """What a CUDA-graph capture does before recording (generation.CachedDecoder._capture): it runs the
    step on the next token and rewinds the cache's position; the real step then reads nothing that
    run changed, as every write lands in the slot the real step overwrites (on a GPU:
    tests/test_gpu.py's graph-replayed decoding)."""
    model = small_model(token_shift=shift, **PRESET)
    x = tokens(2, 12)
    want = decode_each_step(CachedDecoder(model, *model.prepare(2)), x, 5)
    decoder = CachedDecoder(model, *model.prepare(2))
    got = [decoder.append(x[:, :5])]
    with torch.no_grad():
        for t in range(5, 12):
            if decoder.cache.length < model.block_width - 1:  # the steps a graph would replay
                position = decoder.cache.position.clone()
                for _ in range(2):
                    decoder._step(x[:, t:t + 1])
                    decoder.cache.position.copy_(position)
                    decoder.cache.length -= 1
            got.append(decoder.append(x[:, t:t + 1]))
    torch.testing.assert_close(torch.stack(got, dim=1), want, rtol=0, atol=0)


@pytest.mark.parametrize("options", [{}, PRESET], ids=["seed", "preset"])
def test_train_step_equals_wrapper_backward(options):
    """TrainStep's loss and gradients equal the wrapper's backward, dropout on; the key/value rows of
    the projection learn from the shifted channels (their gradient changes with the option)."""
    grads = {}
    for shift in (False, True):
        model = small_model(use_compressed_mem=True, token_shift=shift, **RECURRENT, **options).train()
        assert_train_step_equals_wrapper_backward(model)
        grads[shift] = model.layers[0][0].to_qkv.weight.grad.clone()
    assert not torch.allclose(grads[True], grads[False], atol=1e-6)


def test_a_flag_that_is_not_a_bool_is_refused():
    with pytest.raises(TypeError, match=r"token_shift=.yes. violates type hint <class .bool.>"):
        small_model(token_shift="yes")
