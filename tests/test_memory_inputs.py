"""memory_kv_from_inputs: the XL memory keeps each layer's inputs (before its norm) and norms and
projects them to keys/values with the current weights (Transformer-XL's way). The logits are those
of the cached keys/values; the gradient adds the norm's and the key/value projection's share of the
attention to memory, also across a segment boundary, where the memories are detached."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from block_recurrent_transformer_pytorch import RecurrentTrainerWrapper
from block_recurrent_transformer_pytorch.generation import CachedDecoder, ReferenceDecoder
from block_recurrent_transformer_pytorch.memory import Memories

from .helpers import decode_each_step, run_segments, small_model, tokens

RECURRENT = dict(recurrent_layers=(2, 3), read_recurrent_layers=(1, 3))


def _pair(seed: int = 0, **overrides):
    """The same weights with the option off and on."""
    off = small_model(seed, **overrides)
    on = small_model(seed, memory_kv_from_inputs=True, **overrides)
    on.load_state_dict(off.state_dict())
    return off, on


@pytest.mark.parametrize("compressed, kv_heads, with_resets", [
    (False, 1, False), (True, 1, False), (False, 2, True), (True, 1, True),
])
def test_logits_and_cached_memories_equal_the_options_off(compressed, kv_heads, with_resets):
    """Four segments of two blocks, memories carried (rows reset at different segments): the same
    logits and the same cached keys/values as with the option off; the inputs kept are each layer's
    inputs of the last block, before its norm."""
    off, on = _pair(use_compressed_mem=compressed, kv_heads=kv_heads, **RECURRENT)
    x = tokens(2, 64)
    resets = {1: torch.tensor([True, False]), 2: torch.tensor([False, True])} if with_resets else None
    want, want_mem, _ = run_segments(off, x, 16, resets=resets)
    got, mem, _ = run_segments(on, x, 16, resets=resets)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mem.keys_values(), want_mem.keys_values(), rtol=1e-5, atol=1e-5)
    assert want_mem.xl_inputs is None and mem.xl_inputs.shape == (3, 2, 8, 32)
    # layer 1's input is the last block's embeddings
    torch.testing.assert_close(mem.xl_inputs[0], on.token_emb(x[:, -8:]))


def _hand_projected(model, memories: Memories) -> Memories:
    """The memories with their XL keys/values written out from the saved inputs by each layer's
    pre-norm and key/value rows of to_qkv (live weights: the norm and projection get the gradient
    through them)."""
    config, layers = model.config, []
    for index, layer in enumerate(model.layers):
        weight = layer[0].to_qkv.weight[config.heads * config.dim_head:]
        normed = F.layer_norm(memories.xl_inputs[index], (config.dim,), layer[0].norm.weight)
        kv = normed @ weight.T  # (b, n, 2 * kv_heads * d): keys then values, head by head
        b, n, _ = kv.shape
        layers.append(kv.reshape(b, n, 2, config.kv_heads, config.dim_head).permute(2, 0, 3, 1, 4))
    return replace(memories, xl=torch.stack(layers), xl_inputs=None)


def _kv_grads(model) -> list[torch.Tensor]:
    """Each layer's gradients of the key/value rows of to_qkv and of its attention's pre-norm gain."""
    rows = model.config.heads * model.config.dim_head
    return [grad.clone() for layer in model.layers for grad in (layer[0].to_qkv.weight.grad[rows:],
                                                                 layer[0].norm.weight.grad)]


@pytest.mark.parametrize("compressed", [False, True])
def test_the_key_value_projection_learns_from_attention_to_memory(compressed):
    """After a first segment (memories detached), the second segment's loss gives the key/value rows
    of to_qkv and the pre-norm gains the gradient of keys/values written out by hand from the saved
    inputs, and that differs from the option-off gradient, which lacks the memory's share (the
    compressed memory stays cached)."""
    off, on = _pair(use_compressed_mem=compressed)
    reference, _ = _pair(use_compressed_mem=compressed)  # option off, memories projected by hand
    # With compressed memory, a second segment of one block: in a second block the reference's keys/values,
    # pushed out of the XL memory, would reach the loss through the compressor, where the option compresses
    # the cached (detached) ones.
    x = tokens(2, 16 + (9 if compressed else 17), seed=3)
    grads = {}
    for name, model in (("off", off), ("on", on), ("reference", reference)):
        _, memories, states = (on if name == "reference" else model)(x[:, :16])
        if name == "reference":
            memories = _hand_projected(reference, memories)
        model.zero_grad(set_to_none=True)
        loss, _, _ = model(x[:, 16:], return_loss=True, xl_memories=memories, states=states)
        loss.backward()
        grads[name] = _kv_grads(model)
    for got, want, without in zip(grads["on"], grads["reference"], grads["off"]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
        assert (got - without).abs().max() > 1e-4 * without.abs().max()  # the memory's share is there
    # the rest of the model learns as with the option off (only the memory's keys/values differ in graph)
    q_rows = off.config.heads * off.config.dim_head
    torch.testing.assert_close(on.layers[0][0].to_qkv.weight.grad[:q_rows], off.layers[0][0].to_qkv.weight.grad[:q_rows],
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("decoder_cls", [CachedDecoder, ReferenceDecoder])
@pytest.mark.parametrize("compressed", [False, True])
def test_decoding_equals_the_full_forward(decoder_cls, compressed):
    model = small_model(use_compressed_mem=compressed, memory_kv_from_inputs=True, **RECURRENT)
    x = tokens(2, 44)
    expected, _, _ = run_segments(model, x, 16)
    got = decode_each_step(decoder_cls(model, *model.prepare(2)), x, 5)
    torch.testing.assert_close(got, expected[:, 4:], rtol=1e-5, atol=1e-5)


def test_decoding_projects_memories_made_before_the_weights_changed_afresh():
    """Memories made by other weights (a training step since): decoding from them equals the full
    forward, which projects their inputs with the current weights, not their cached keys/values."""
    model = small_model(use_compressed_mem=True, memory_kv_from_inputs=True, **RECURRENT)
    x = tokens(2, 40)
    _, memories, states = model(x[:, :16])
    with torch.no_grad():
        for layer in model.layers:
            layer[0].to_qkv.weight.mul_(1.5)
    expected, _, _ = model(x[:, 16:32], xl_memories=memories, states=states)
    got = decode_each_step(CachedDecoder(model, *model.prepare(2, memories, states)), x[:, 16:32], 1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_generated_memories_continue_into_training():
    """generate's returned memories carry the inputs; training continues from them as from the
    memories of the full forward over the same tokens."""
    model = small_model(use_compressed_mem=True, memory_kv_from_inputs=True)
    prime = tokens(2, 5)
    new, memories, states = model.generate(prime, 37, temperature=0, return_memories_and_states=True)
    full = torch.cat((prime, new), dim=1)
    _, want_mem, want_states = run_segments(model, full[:, :32], 16)
    torch.testing.assert_close(memories.xl_inputs, want_mem.xl_inputs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(memories.keys_values(), want_mem.keys_values(), rtol=1e-5, atol=1e-5)
    wrapper = RecurrentTrainerWrapper(model.train())
    nxt = tokens(2, 17, seed=9)
    got = wrapper(nxt, xl_memories=memories, states=states)
    want = wrapper(nxt, xl_memories=want_mem, states=want_states)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_memories_move_detach_and_save_with_their_inputs():
    model = small_model(memory_kv_from_inputs=True)
    _, memories, _ = model(tokens(2, 16), detach=False)
    assert memories.xl_inputs.requires_grad
    assert not memories.detach().xl_inputs.requires_grad
    assert memories.to(torch.float64).xl_inputs.dtype == torch.float64
    buffer = io.BytesIO()
    torch.save(memories.detach(), buffer)
    buffer.seek(0)
    assert torch.equal(torch.load(buffer).xl_inputs, memories.xl_inputs.detach())  # weights_only=True


def test_memories_of_the_other_kind_or_shape_are_refused():
    off, on = _pair()
    x = tokens(2, 16)
    _, without, _ = off(x)
    _, with_inputs, _ = on(x)
    with pytest.raises(ValueError, match=r"xl_memories.xl_inputs is None.*memory_kv_from_inputs=True"):
        on(x, xl_memories=without)
    with pytest.raises(ValueError, match=r"holds xl_inputs.*memory_kv_from_inputs=False"):
        off(x, xl_memories=with_inputs)
    bad = replace(with_inputs, xl_inputs=with_inputs.xl_inputs[:, :, :4])
    with pytest.raises(ValueError, match=r"xl_memories.xl_inputs must have shape \(depth=3, batch=2, xl_len=8 "
                                         r"\(as xl\), dim=32\), got \(3, 2, 4, 32\)"):
        on(x, xl_memories=bad)
    with pytest.raises(TypeError, match=r"xl_inputs must hold floating-point"):
        on(x, xl_memories=replace(with_inputs, xl_inputs=with_inputs.xl_inputs.long()))
    with pytest.raises(ValueError, match=r"list of tensors cannot carry the layer inputs \(xl_inputs\)"):
        on(x, xl_memories=list(with_inputs))
    with pytest.raises(TypeError, match="memory_kv_from_inputs"):
        small_model(memory_kv_from_inputs="yes")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_memories_cast_to_another_dtype_still_serve_the_model(dtype):
    """Memories moved with Memories.to(dtype) (as with the option off) are read in the residual
    stream's dtype: the next segment's logits are those from the uncast memories up to the cast's
    rounding, and the memories it returns hold their inputs in the model's dtype again."""
    model = small_model(memory_kv_from_inputs=True, **RECURRENT)
    x = tokens(2, 32)
    _, memories, states = model(x[:, :16])
    want, _, _ = model(x[:, 16:], xl_memories=memories, states=states)
    got, after, _ = model(x[:, 16:], xl_memories=memories.to(dtype), states=states)
    tolerance = 5e-2 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(got, want, rtol=tolerance, atol=tolerance)
    assert after.xl_inputs.dtype == torch.float32
