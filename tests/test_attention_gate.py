"""attention_gate (each head's attention output times 2 * sigmoid(w_h . x), x the layer's normed input): what it
computes, that it starts as the model without it and keeps the initial draw, that its gates learn, and that
cached decoding, segment-by-segment runs and TrainStep compute what the full forward does with gates of their
own, causally."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from block_recurrent_transformer_pytorch.generation import CachedDecoder, ReferenceDecoder
from training.optimizer import param_groups

from .helpers import (assert_causal, assert_decoding_equals_the_full_forward, assert_starts_as_the_model_without,
                      assert_train_step_equals_wrapper_backward, assert_whole_run_equals_segments, small_model, tokens)

RECURRENT = dict(recurrent_layers=(1, 3), read_recurrent_layers=(1, 2))
PRESET = dict(memory_kv_from_inputs=True, rotary_dim=4, kv_heads=2, xpos_scale_base=10 ** 9, value_residual=True,
              unet_skips=True, all_layers_qk_rmsnorm=True, logit_softcap=15.0)
KNN = dict(knn_layers=(3,), knn_memory_size=24, knn_top_k=4)
CASES = [(False, {}), (True, {}), (False, PRESET), (True, dict(PRESET, xl_memory_blocks=2)),
         (False, dict(PRESET, **KNN))]
CASE_IDS = ["seed", "compressed", "preset", "preset-2-blocks-compressed", "preset-knn"]


def gated(model):
    """model with gates of its own in every layer (not the starting zeros): some heads near shut, some open."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for attn, _ in model.layers:
            attn.head_gate.copy_(torch.randn(attn.head_gate.shape, generator=g))
    return model


def test_the_gate_starts_at_one_keeps_the_initial_draw_and_the_model_without_it():
    """Gates of zeros (2 * sigmoid(0) = 1): the same weights, one parameter a layer added, and the same logits,
    memories and states over segments with resets, as the model without the option."""
    off = small_model(use_compressed_mem=True, **RECURRENT, **PRESET)
    on = small_model(use_compressed_mem=True, attention_gate=True, **RECURRENT, **PRESET)
    assert_starts_as_the_model_without(on, off, {f"layers.{i}.0.head_gate" for i in range(len(on.layers))})
    x = tokens(2, 16)
    assert not torch.allclose(gated(on)(x)[0], off(x)[0], atol=1e-3)


def test_each_head_is_scaled_by_its_gate_before_the_output_projection():
    """output() by hand: head h's slice of the attention output times 2 * sigmoid(head_gate[h] . x_normed), the
    state reads concatenated ungated, then to_out."""
    model = gated(small_model(attention_gate=True, **RECURRENT))
    attn = model.layers[0][0]  # reads one state
    g = torch.Generator().manual_seed(4)
    out, read, x_normed = (torch.randn(2, 5, n, generator=g) for n in (32, 32, 32))
    gate = 2 * torch.sigmoid(torch.einsum("bnc,hc->bnh", x_normed, attn.head_gate))
    heads = out.view(2, 5, attn.heads, attn.dim_head) * gate[..., None]
    expected = F.linear(torch.cat((heads.flatten(-2), read), dim=-1), attn.to_out.weight)
    torch.testing.assert_close(attn.output(out, [read], x_normed), expected)


@pytest.mark.parametrize("compressed, options", CASES, ids=CASE_IDS)
def test_whole_run_equals_segment_by_segment(compressed, options):
    """A segment of 8 blocks computes what 4 segments of 2 blocks compute with memories and states carried,
    with gates of their own (compressed memories, two memory blocks, kNN layers)."""
    whole = gated(small_model(max_seq_len=64, use_compressed_mem=compressed, attention_gate=True, **RECURRENT,
                              **options))
    chunked = small_model(use_compressed_mem=compressed, attention_gate=True, **RECURRENT, **options)
    assert_whole_run_equals_segments(whole, chunked)


@pytest.mark.parametrize("compressed", [False, True])
def test_causality_with_gates_of_their_own(compressed):
    """Each token's gate comes from its own input: no logit sees a later token, across blocks and segments."""
    model = gated(small_model(max_seq_len=32, use_compressed_mem=compressed, attention_gate=True, **RECURRENT,
                              **PRESET))
    assert_causal(model, tokens(1, 64), 32)


@pytest.mark.parametrize("decoder_cls", [CachedDecoder, ReferenceDecoder])
@pytest.mark.parametrize("compressed, options", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("prefill", [1, 5, 8])
def test_decoding_equals_the_full_forward(decoder_cls, compressed, options, prefill):
    """Token by token after a prefill that ends mid-block, at a block's end or after its first token, each new
    token gated as the full forward gates it."""
    model = gated(small_model(use_compressed_mem=compressed, attention_gate=True, **RECURRENT, **options))
    assert_decoding_equals_the_full_forward(model, decoder_cls, prefill)


@pytest.mark.parametrize("options", [{}, PRESET], ids=["seed", "preset"])
def test_train_step_equals_wrapper_backward_with_gates_of_their_own(options):
    """TrainStep's loss and gradients equal the wrapper's backward, dropout on, every gate away from 1."""
    model = gated(small_model(use_compressed_mem=True, attention_gate=True, **RECURRENT, **options)).train()
    assert_train_step_equals_wrapper_backward(model)


def test_every_gate_learns_from_the_start():
    """At zero each head's gate weights get a gradient (the gate's slope there is 1/2), in every layer."""
    model = small_model(use_compressed_mem=True, attention_gate=True, **RECURRENT, **PRESET).train()
    assert_train_step_equals_wrapper_backward(model)
    for attn, _ in model.layers:
        assert attn.head_gate.grad is not None and torch.all(attn.head_gate.grad.abs().sum(dim=1) > 0)


def test_the_gate_reads_the_layers_normed_input():
    """The gate of each token comes from its layer's input after the attention's norm (the token's own, not
    token-shifted, as the state reads take it)."""
    model = gated(small_model(attention_gate=True, token_shift=True, **RECURRENT))
    inputs, gate_inputs = [], []
    for layer in model.layers:
        layer.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
        attn = layer[0]

        def output(out, reads, x_normed, original=attn.output):
            gate_inputs.append(x_normed)
            return original(out, reads, x_normed)

        attn.output = output
    with torch.no_grad():
        model(tokens(2, 16))
    assert len(inputs) == len(gate_inputs) == 2 * len(model.layers)  # two blocks, each through every layer
    norms = [layer[0].norm for layer in model.layers] * 2
    for norm, h, x_normed in zip(norms, inputs, gate_inputs):
        torch.testing.assert_close(x_normed, norm(h), rtol=0, atol=0)


def test_a_flag_that_is_not_a_bool_is_refused():
    with pytest.raises(TypeError, match=r"attention_gate=.yes. violates type hint <class .bool.>"):
        small_model(attention_gate="yes")


def test_the_gates_train_with_adamw_without_weight_decay_not_muon():
    """A gate's weights are a vector a head, not a linear map between hidden layers that Muon orthogonalises:
    AdamW trains them, without weight decay, as every parameter that is not a linear or embedding weight."""
    model = small_model(attention_gate=True, **RECURRENT)
    gates = {id(attn.head_gate) for attn, _ in model.layers}
    groups, matrices = param_groups(model, weight_decay=0.1, muon=True)
    assert matrices and not gates & {id(p) for p in matrices}
    assert gates <= {id(p) for p in groups[1]["params"]} and groups[1]["weight_decay"] == 0.0
