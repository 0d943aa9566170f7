"""value_residual (every layer above the first mixes the first layer's values into its own), unet_skips
(the first half's outputs added again at their mirror layers' inputs) and embedding_mixing (every layer
above the first takes a mix of the residual stream and the block's embeddings): what each computes, that
none moves the initial draw, and that memories projected afresh, cached decoding and TrainStep compute
what the full forward does with them (causality and segment by segment: tests/test_model.py)."""

from __future__ import annotations

import pytest
import torch

from block_recurrent_transformer_pytorch.generation import CachedDecoder, ReferenceDecoder

from .helpers import (assert_causal, assert_decoding_equals_the_full_forward, assert_projected_memories_equal_cached,
                      assert_starts_as_the_model_without, assert_train_step_equals_wrapper_backward,
                      assert_whole_run_equals_segments, run_segments, small_model, tokens)

RECURRENT = dict(recurrent_layers=(1, 3), read_recurrent_layers=(1, 2))
PRESET = dict(memory_kv_from_inputs=True, rotary_dim=4, kv_heads=2, xpos_scale_base=10 ** 9)
BOTH = dict(value_residual=True, unet_skips=True, embedding_mixing=True)


def layer_inputs_and_outputs(model, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each layer's input (its residual stream) and output over one forward of x, without gradients."""
    inputs, outputs = [], []

    def record(module, args, out) -> None:
        inputs.append(args[0])
        outputs.append(out[0])

    hooks = [layer.register_forward_hook(record) for layer in model.layers]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return inputs, outputs


@pytest.mark.parametrize("option", ["value_residual", "unet_skips"])
def test_the_options_keep_the_initial_draw_and_change_the_logits(option):
    off, on = small_model(3, **RECURRENT), small_model(3, **RECURRENT, **{option: True})
    added = {name for name in on.state_dict() if name not in off.state_dict()}
    assert added == ({"layers.1.0.value_mix", "layers.2.0.value_mix"} if option == "value_residual"
                     else {"skip_weights"})
    for name, weight in off.state_dict().items():
        assert torch.equal(on.state_dict()[name], weight), name
    x = tokens(2, 16)
    assert not torch.allclose(on(x)[0], off(x)[0], atol=1e-3)


def test_embedding_mixing_starts_as_the_model_without_it_and_keeps_the_initial_draw():
    """The mixes start at (1, 0), the plain residual stream: the same weights, one parameter added, and
    the same logits, memories and states over segments with resets, memories projected from inputs."""
    off = small_model(use_compressed_mem=True, **RECURRENT, **PRESET)
    on = small_model(use_compressed_mem=True, embedding_mixing=True, **RECURRENT, **PRESET)
    assert on.embedding_mix.tolist() == [1.0, 0.0] * (len(on.layers) - 1)  # (a, b) per layer above the first
    assert_starts_as_the_model_without(on, off, {"embedding_mix"})


def test_each_layer_above_the_first_takes_its_mix_of_the_stream_and_the_embeddings():
    """With (a, b) of its own, layer k > 0 takes a * (layer k - 1's output) + b * (the block's token
    embeddings), after the U-net skip that joins it; the first layer takes the embeddings alone."""
    model = small_model(depth=4, embedding_mixing=True, unet_skips=True)
    mixes = torch.tensor([[0.5, 2.0], [-1.0, 0.25], [1.5, -3.0]])
    with torch.no_grad():
        model.embedding_mix.copy_(mixes.flatten())
        model.skip_weights.copy_(torch.tensor([0.7, -0.4]))
    x = tokens(2, 8)
    inputs, outputs = layer_inputs_and_outputs(model, x)
    x0 = model.token_emb(x)
    torch.testing.assert_close(inputs[0], x0, rtol=0, atol=0)
    torch.testing.assert_close(inputs[1], 0.5 * outputs[0] + 2.0 * x0, rtol=1e-6, atol=1e-6)
    # depth 4: layer 1's output joins layer 2's input (skip weight 0.7), layer 0's joins layer 3's (-0.4)
    torch.testing.assert_close(inputs[2], -1.0 * (outputs[1] + 0.7 * outputs[1]) + 0.25 * x0, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(inputs[3], 1.5 * (outputs[2] - 0.4 * outputs[0]) - 3.0 * x0, rtol=1e-6, atol=1e-6)


def test_a_value_mix_of_one_and_zero_is_the_model_without_it():
    """(a, b) = (1, 0) in every layer leaves each layer its own values, memories included: the logits,
    memories and states of the model without value_residual, over segments with resets."""
    off = small_model(use_compressed_mem=True, **RECURRENT, **PRESET)
    on = small_model(use_compressed_mem=True, value_residual=True, **RECURRENT, **PRESET)
    with torch.no_grad():
        for attn, _ in on.layers[1:]:
            attn.value_mix.copy_(torch.tensor([1.0, 0.0]))
    x = tokens(2, 48)
    resets = {1: torch.tensor([True, False])}
    want, want_mem, want_states = run_segments(off, x, 16, resets=resets)
    got, mem, states = run_segments(on, x, 16, resets=resets)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(mem.keys_values(), want_mem.keys_values(), rtol=1e-6, atol=1e-6)
    for a, b in zip(states, want_states):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_each_layer_above_the_first_pushes_its_mix_of_the_first_layers_values():
    """The values a layer pushes to the memory (and attends) are a * its own + b * the first layer's,
    for a learned (a, b) per layer; the first layer's are its own."""
    model = small_model(value_residual=True, kv_heads=2)
    with torch.no_grad():
        model.layers[1][0].value_mix.copy_(torch.tensor([0.3, 2.0]))
        model.layers[2][0].value_mix.copy_(torch.tensor([-1.0, 0.5]))
    own = []  # each layer's own values, (b, kv_heads, n, d), from its projection's last kv_heads * d outputs
    hooks = [attn.to_qkv.register_forward_hook(
        lambda m, args, out: own.append(out[..., -2 * 8:].unflatten(-1, (2, 8)).transpose(1, 2)))
        for attn, _ in model.layers]
    _, memories, _ = model(tokens(2, 8))
    for hook in hooks:
        hook.remove()
    pushed = memories.keys_values()[:, 1]  # (depth, b, kv_heads, n, d)
    torch.testing.assert_close(pushed[0], own[0], rtol=0, atol=0)
    torch.testing.assert_close(pushed[1], 0.3 * own[1] + 2.0 * own[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(pushed[2], -1.0 * own[2] + 0.5 * own[0], rtol=1e-6, atol=1e-6)


def test_zero_skip_weights_are_the_model_without_skips_and_each_skip_joins_its_mirror():
    """depth 5: layers 0 and 1 (from 0) hand their outputs to layers 4 and 3; the middle layer takes
    none. Weights at zero give the plain model; at (2, -3), each mirror layer's input is the residual
    stream plus its weight times its mirror's output."""
    plain = small_model(depth=5)
    skipped = small_model(depth=5, unet_skips=True)
    x = tokens(2, 16)
    with torch.no_grad():
        skipped.skip_weights.zero_()
        torch.testing.assert_close(run_segments(skipped, x, 8)[0], run_segments(plain, x, 8)[0], rtol=0, atol=0)
        skipped.skip_weights.copy_(torch.tensor([2.0, -3.0]))
    inputs, outputs = layer_inputs_and_outputs(skipped, x[:, :8])
    for index in (1, 2):
        torch.testing.assert_close(inputs[index], outputs[index - 1], rtol=0, atol=0)
    torch.testing.assert_close(inputs[3], outputs[2] + 2.0 * outputs[1], rtol=0, atol=0)
    torch.testing.assert_close(inputs[4], outputs[3] - 3.0 * outputs[0], rtol=0, atol=0)


def uneven(model):
    """model with value and embedding mixes and a skip weight of its own in every layer (not the options'
    starting values)."""
    with torch.no_grad():
        for i, (attn, _) in enumerate(model.layers[1:]):
            attn.value_mix.copy_(torch.tensor([0.4 + 0.3 * i, 1.3 - 0.5 * i]))
            model.embedding_mix.view(-1, 2)[i].copy_(torch.tensor([0.9 - 0.2 * i, 0.6 + 0.4 * i]))
        model.skip_weights.copy_(torch.linspace(0.5, -0.7, len(model.skip_weights)))
    return model


@pytest.mark.parametrize("compressed", [False, True])
def test_memories_projected_from_inputs_equal_the_cached_ones(compressed):
    """memory_kv_from_inputs projects the memory's values afresh in every layer and mixes them with the
    first layer's, projected afresh too: what the model that keeps the mixed values computes, with mixes
    and skips of their own (the inputs kept are the ones mixed with the embeddings)."""
    assert_projected_memories_equal_cached(
        uneven(small_model(use_compressed_mem=compressed, kv_heads=2, **BOTH, **RECURRENT)),
        small_model(use_compressed_mem=compressed, kv_heads=2, memory_kv_from_inputs=True, **BOTH, **RECURRENT))


KNN = dict(knn_layers=(3,), knn_memory_size=24, knn_top_k=4)
MORE = [(False, {}), (True, {}), (False, PRESET), (True, PRESET),
        (True, dict(PRESET, token_shift=True, xl_memory_blocks=2)), (False, KNN), (False, dict(PRESET, **KNN))]
MORE_IDS = ["seed", "compressed", "preset", "preset-compressed", "preset-shift-2-blocks-compressed", "knn",
            "preset-knn"]


@pytest.mark.parametrize("compressed, options", MORE, ids=MORE_IDS)
def test_whole_run_equals_segment_by_segment(compressed, options):
    """A segment of 8 blocks computes what 4 segments of 2 blocks compute with memories and states carried,
    whatever the mixes and skips weigh (with compressed memories, xl_memory_blocks, token_shift, kNN layers)."""
    whole = uneven(small_model(max_seq_len=64, use_compressed_mem=compressed, **BOTH, **RECURRENT, **options))
    chunked = small_model(use_compressed_mem=compressed, **BOTH, **RECURRENT, **options)
    assert_whole_run_equals_segments(whole, chunked)


@pytest.mark.parametrize("compressed", [False, True])
def test_causality_with_mixes_and_skips_of_their_own(compressed):
    """The value and embedding mixes and the skips join only the same tokens' values and inputs: no logit
    sees a later token, across blocks and segments, memories projected from their inputs."""
    model = uneven(small_model(max_seq_len=32, use_compressed_mem=compressed, **BOTH, **RECURRENT, **PRESET))
    assert_causal(model, tokens(1, 64), 32)


@pytest.mark.parametrize("decoder_cls", [CachedDecoder, ReferenceDecoder])
@pytest.mark.parametrize("compressed, options", MORE, ids=MORE_IDS)
@pytest.mark.parametrize("prefill", [1, 5, 8])
def test_decoding_equals_the_full_forward(decoder_cls, compressed, options, prefill):
    """Token by token after a prefill that ends mid-block, at a block's end or after its first token:
    each step mixes its new tokens' values with the first layer's of the same tokens, and the cache's
    memories as the full forward mixes them (mixes and skips of their own in every layer)."""
    model = uneven(small_model(use_compressed_mem=compressed, **BOTH, **RECURRENT, **options))
    assert_decoding_equals_the_full_forward(model, decoder_cls, prefill)


@pytest.mark.parametrize("options", [{}, PRESET], ids=["seed", "preset"])
def test_train_step_equals_wrapper_backward_and_the_mixes_learn(options):
    """TrainStep's loss and gradients equal the wrapper's backward, dropout on; every value mix, skip weight
    and embedding mix gets a gradient."""
    model = small_model(use_compressed_mem=True, **BOTH, **RECURRENT, **options).train()
    assert_train_step_equals_wrapper_backward(model)
    for weight in [attn.value_mix for attn, _ in model.layers[1:]] + [model.skip_weights, model.embedding_mix]:
        assert weight.grad is not None and torch.all(weight.grad != 0)


@pytest.mark.parametrize("option", ["value_residual", "unet_skips", "embedding_mixing"])
def test_a_flag_that_is_not_a_bool_is_refused(option):
    with pytest.raises(TypeError, match=rf"{option}=.yes. violates type hint <class .bool.>"):
        small_model(**{option: "yes"})


@pytest.mark.parametrize("option", ["value_residual", "unet_skips", "embedding_mixing"])
def test_one_layer_is_refused(option):
    with pytest.raises(ValueError, match=rf"{option}=True needs depth >= 2 .*, got depth=1"):
        small_model(depth=1, recurrent_layers=(1,), **{option: True})


def test_the_first_layers_values_pass_their_gradient_to_every_layer_that_mixes_them():
    """Against central differences in float64: the loss of a segment attending memories projected from their
    inputs, as a function of the first layer's value weights (the memories and states of the segment before
    held fixed). Its gradient must reach them through the block's values and the memory's, projected afresh,
    in every layer that mixes them, not only through the first layer's own attention."""
    model = small_model(value_residual=True, unet_skips=True, kv_heads=2, memory_kv_from_inputs=True,
                        **RECURRENT).double()
    x = tokens(2, 33)
    with torch.no_grad():
        _, memories, states = model(x[:, :16])
        for attn, _ in model.layers[1:]:
            attn.value_mix.copy_(torch.tensor([0.3, 1.7]))  # the first layer's values weigh more than at the start

    def loss() -> torch.Tensor:
        return model(x[:, 16:], xl_memories=memories, states=states, return_loss=True)[0]

    weight = model.layers[0][0].to_qkv.weight
    loss().backward()
    first_value_row = weight.shape[0] - 2 * 8  # the last kv_heads * dim_head rows compute the values
    g = torch.Generator().manual_seed(0)
    for row, col in zip(torch.randint(first_value_row, weight.shape[0], (6,), generator=g).tolist(),
                        torch.randint(0, weight.shape[1], (6,), generator=g).tolist()):
        with torch.no_grad():
            weight[row, col] += 1e-6
            up = loss()
            weight[row, col] -= 2e-6
            down = loss()
            weight[row, col] += 1e-6
        torch.testing.assert_close(weight.grad[row, col], (up - down) / 2e-6, rtol=1e-5, atol=1e-9)


def test_memories_projected_afresh_mix_the_first_layers_values_projected_afresh():
    """After the weights change (a training step between two segments), a later layer attends memory values
    a * its own projection of its cached inputs + b * the first layer's projection of its own, both with the
    current weights: not the first layer's values as they were cached."""
    model = small_model(value_residual=True, kv_heads=2, memory_kv_from_inputs=True, **RECURRENT)
    x = tokens(2, 16)
    with torch.no_grad():
        _, memories, states = model(x[:, :8])
        model.layers[0][0].to_qkv.weight.mul_(1.5)  # the first layer's values move
        model.layers[2][0].value_mix.copy_(torch.tensor([0.3, 1.7]))
    attended = []
    hook = model.layers[2][0].attend.register_forward_hook(lambda m, args, out: attended.append(args[2]))
    with torch.no_grad():
        model(x[:, 8:], xl_memories=memories, states=states)
    hook.remove()
    first, third = model.layers[0][0], model.layers[2][0]
    with torch.no_grad():
        want = (0.3 * third.project_kv(third.norm(memories.xl_inputs[2]), 8)[1]
                + 1.7 * first.project_kv(first.norm(memories.xl_inputs[0]), 8)[1])
    torch.testing.assert_close(attended[0][..., :memories.length, :], want, rtol=1e-5, atol=1e-6)
