"""The model computes what the paper's Block-Recurrent Transformer computes: shapes, causality,
equivalence of chunked and whole runs, the recurrent state doing real work, gradients, resets."""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch
import torch.nn.functional as F

from block_recurrent_transformer_pytorch import BlockRecurrentTransformer, Memories, RecurrentTrainerWrapper
from block_recurrent_transformer_pytorch.generation import CachedDecoder
from block_recurrent_transformer_pytorch.positions import RotaryEmbedding, apply_rotary

from .helpers import (VOCAB, assert_causal, assert_whole_run_equals_segments, decode_each_step, run_segments,
                      small_model, tokens)


def test_seed_usage_runs_unchanged():
    model = BlockRecurrentTransformer(num_tokens=20000, dim=64, depth=6, dim_head=16, heads=8, max_seq_len=128,
                                      block_width=64, num_state_vectors=64, recurrent_layers=(4,),
                                      use_compressed_mem=False, compressed_mem_factor=4, use_flash_attn=True)
    seq = torch.randint(0, 20000, (1, 128))
    out, mems1, states1 = model(seq)
    out, mems2, states2 = model(seq, xl_memories=mems1, states=states1)
    assert out.shape == (1, 128, 20000)
    assert isinstance(mems2, Memories) and mems2.xl.shape == (6, 2, 1, 1, 64, 16)
    assert len(states2) == 1 and states2[0].shape == (1, 64, 64)
    assert not torch.equal(states1[0], states2[0])


@pytest.mark.parametrize("compressed", [False, True])
def test_shapes_short_and_ragged_sequences(compressed):
    model = small_model(use_compressed_mem=compressed, recurrent_layers=[1, 3], read_recurrent_layers=[1, 2])
    for length in (1, 5, 8, 13, 16):
        logits, memories, states = model(tokens(2, length))
        assert logits.shape == (2, length, VOCAB)
        # only full blocks are committed to the memories
        assert memories.xl.shape[-2] == (8 if length >= 8 else 0)
        assert [s.shape for s in states] == [(2, 6, 32)] * 2
    if compressed:
        _, memories, _ = run_segments(model, tokens(2, 48), 16)
        assert memories.compressed.shape == (3, 2, 2, 1, 4, 8)  # half a block, factor 4


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("options", [{}, dict(token_shift=True, memory_kv_from_inputs=True, xl_memory_blocks=2),
                                     dict(value_residual=True, unet_skips=True, memory_kv_from_inputs=True)],
                         ids=["seed", "shift-2-memory-blocks", "value-residual-unet"])
def test_causality_across_blocks_and_segments(compressed, options):
    model = small_model(max_seq_len=32, use_compressed_mem=compressed, recurrent_layers=(1, 3),
                        read_recurrent_layers=(1, 2), **options)
    assert_causal(model, tokens(1, 64), 32)


# the long-documents preset's attention options (training/config.py's PRESETS), at this size
PRESET_OPTIONS = dict(memory_kv_from_inputs=True, rotary_dim=4, kv_heads=2, xpos_scale_base=10 ** 9)


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("flash", [False, True])
@pytest.mark.parametrize("options", [{}, PRESET_OPTIONS, dict(xl_memory_blocks=3),
                                     dict(PRESET_OPTIONS, token_shift=True, xl_memory_blocks=3),
                                     dict(PRESET_OPTIONS, value_residual=True, unet_skips=True, logit_softcap=2.0)],
                         ids=["seed", "preset", "seed-3-memory-blocks", "preset-shift-3-memory-blocks",
                              "preset-value-residual-unet-softcap"])
def test_whole_run_equals_segment_by_segment(compressed, flash, options):
    # a segment of 8 blocks computes what 4 segments of 2 blocks compute with memories and states carried:
    # how many blocks a training segment holds changes what is trained, never what is computed (the token
    # shift never reaches across a block boundary; memories of 3 blocks are full after the first segments)
    whole = small_model(max_seq_len=64, use_compressed_mem=compressed, use_flash_attn=flash,
                        recurrent_layers=(1, 3), read_recurrent_layers=(1, 2), **options)
    chunked = small_model(max_seq_len=16, use_compressed_mem=compressed, use_flash_attn=flash,
                          recurrent_layers=(1, 3), read_recurrent_layers=(1, 2), **options)
    assert_whole_run_equals_segments(whole, chunked)


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("from_inputs", [False, True])
@pytest.mark.parametrize("recurrent", [False, True])
def test_detached_block_memories_leave_earlier_blocks_only_the_states_gradient(compressed, from_inputs, recurrent):
    """detach_block_memories: the same logits, but the last block's loss reaches the first block's
    tokens only through the state (none with the state's write detached too, or without recurrent
    layers), while the compressor still learns; without it, through the memories too (four blocks in
    one call, one hop of memory per block)."""
    options = dict(max_seq_len=32, use_compressed_mem=compressed, memory_kv_from_inputs=from_inputs,
                   recurrent_layers=(2,) if recurrent else ())
    plain = small_model(**options)
    detached = small_model(**options, detach_block_memories=True)
    # the state's write cut from the block too: nothing is left to carry the gradient back
    cut = small_model(**options, detach_block_memories=True, detach_state_write_kv=True)
    first_block_grads = []
    for model in (plain, detached, cut):
        model.load_state_dict(plain.state_dict())
        embedded = []

        def keep_embeddings(module, args, out):
            out.retain_grad()
            embedded.append(out)

        hook = model.token_emb.register_forward_hook(keep_embeddings)
        logits, _, _ = model(tokens(2, 32))
        hook.remove()
        logits[:, 24:].logsumexp(-1).sum().backward()  # the last block's outputs alone
        first_block_grads.append(embedded[0].grad[:, :8])
        if model is plain:
            reference = logits
        else:
            torch.testing.assert_close(logits, reference, rtol=0, atol=0)
        if compressed:  # blocks 3 and 4 read what the compressor made of blocks 1 and 2
            assert model.compressor.conv.weight.grad.abs().sum() > 0
    plain_grad, detached_grad, cut_grad = first_block_grads
    assert plain_grad.abs().sum() > 0
    assert torch.count_nonzero(cut_grad) == 0
    if recurrent:
        assert detached_grad.abs().sum() > 0
        assert not torch.allclose(detached_grad, plain_grad)
    else:
        assert torch.count_nonzero(detached_grad) == 0


def test_sdpa_path_equals_reference_path():
    reference = small_model(use_compressed_mem=True, use_flash_attn=False, kv_heads=2)
    fast = small_model(use_compressed_mem=True, use_flash_attn=True, kv_heads=2)
    fast.load_state_dict(reference.state_dict())
    x = tokens(2, 48)
    torch.testing.assert_close(run_segments(fast, x, 16)[0], run_segments(reference, x, 16)[0], rtol=1e-5, atol=1e-5)


def _block_three_logits(model, x):
    return model(x)[0][:, 16:]


@pytest.mark.parametrize("gate_type", ["fixed", "lstm"])
def test_state_carries_information_beyond_the_xl_memory(gate_type):
    """Depth 1, three blocks: block 3 attends to block 2 only; block 1 reaches it via the state alone."""
    model = small_model(depth=1, max_seq_len=24, recurrent_layers=(1,), gate_type=gate_type)
    x = tokens(1, 24)
    changed = x.clone()
    changed[:, :8] = (changed[:, :8] + 1) % VOCAB
    assert not torch.allclose(_block_three_logits(model, x), _block_three_logits(model, changed))


def test_without_recurrence_block_one_cannot_reach_block_three():
    model = small_model(depth=1, max_seq_len=24, recurrent_layers=())
    x = tokens(1, 24)
    changed = x.clone()
    changed[:, :8] = (changed[:, :8] + 1) % VOCAB
    torch.testing.assert_close(_block_three_logits(model, x), _block_three_logits(model, changed), rtol=0, atol=0)


def test_state_passed_in_changes_the_output():
    model = small_model()
    x = tokens(1, 16)
    _, _, states = model(tokens(1, 16, seed=5))
    fresh, _, _ = model(x)
    carried, _, _ = model(x, states=states)
    assert not torch.allclose(fresh, carried)


def test_state_is_updated_per_block_not_per_segment():
    model = small_model()
    x = tokens(1, 16)
    _, _, after_two_blocks = model(x)
    _, _, after_first = model(x[:, :8])
    _, _, after_second = model(x[:, 8:], states=after_first, xl_memories=model(x[:, :8])[1])
    assert not torch.allclose(after_first[0], after_two_blocks[0])
    torch.testing.assert_close(after_second[0], after_two_blocks[0], rtol=1e-5, atol=1e-5)
    # a partial block is read but not committed
    _, _, after_partial = model(x[:, :12])
    torch.testing.assert_close(after_partial[0], after_first[0], rtol=0, atol=0)


def test_zero_initialised_state_reads_start_as_the_model_without_them_and_learn():
    """zero_init_state_reads: at initialisation the output ignores the state (any state passed in
    gives the logits of the initial one), every other weight is the default model's, and the
    gradient reaches the zeroed weights, so the reads can be learned."""
    model = small_model(zero_init_state_reads=True)
    default = small_model()
    inner = 4 * 8  # heads x dim_head
    to_out = model.layers[1][0].to_out.weight  # layer 2 reads the state
    assert to_out[:, inner:].abs().sum() == 0 and to_out[:, :inner].abs().sum() > 0
    for (name, p), q in zip(model.named_parameters(), default.parameters()):
        if p is not to_out:
            torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    x = tokens(1, 16)
    _, _, states = model(tokens(1, 16, seed=5))
    torch.testing.assert_close(model(x, states=states)[0], model(x)[0], rtol=0, atol=0)
    model.train()
    RecurrentTrainerWrapper(model)(tokens(2, 33)).backward()
    assert to_out.grad[:, inner:].abs().sum() > 0


def test_a_recurrent_layer_without_qk_rmsnorm_computes_a_plain_layer_when_its_reads_are_zero():
    """recurrent_layers_qk_rmsnorm=False: the recurrent layer's attention over [memories | block] is a
    plain layer's (the state's own attention keeps its qk-rmsnorm). With the output projection's
    state-read columns at zero, the model computes exactly the model without recurrent layers that
    holds the same weights, across two segments (so through its memories too); the default keeps
    the qk-rmsnorm and differs."""
    options = dict(depth=4, recurrent_layers=(3,), memory_kv_from_inputs=True, rotary_dim=4)
    x = tokens(2, 32)
    plain = small_model(**{**options, "recurrent_layers": ()})
    for qk_rmsnorm in (False, True):
        model = small_model(recurrent_layers_qk_rmsnorm=qk_rmsnorm, **options)
        assert model.states[0].read_attend.qk_norm is not None and model.states[0].cross_attend.qk_norm is not None
        assert (model.layers[2][0].attend.qk_norm is not None) == qk_rmsnorm
        inner = model.config.heads * model.config.dim_head
        with torch.no_grad():
            model.layers[2][0].to_out.weight[:, inner:] = 0
        weights = {name: (p[:, :inner] if name == "layers.2.0.to_out.weight" else p)
                   for name, p in model.state_dict().items() if not name.startswith("states.")}
        if qk_rmsnorm:
            weights = {name: p for name, p in weights.items() if ".attend.qk_norm." not in name}
        plain.load_state_dict(weights)
        expected, got = run_segments(plain, x, 16)[0], run_segments(model, x, 16)[0]
        if qk_rmsnorm:
            assert not torch.allclose(got, expected, rtol=1e-3, atol=1e-3)
        else:
            torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_plain_output_init_scales_the_state_reading_projection_and_draws_nothing_else():
    """plain_output_init: a state-reading layer's output projection is the default draw times
    sqrt(1 + reads) (bounded by a plain layer's 1/sqrt(fan_in of one input)); every other weight
    is the default model's, draw for draw, so the two compare paired at one seed."""
    default, plain = small_model(seed=2), small_model(seed=2, plain_output_init=True)
    to_out = "layers.1.0.to_out.weight"  # layer 2 reads the state
    for (name, p), q in zip(plain.named_parameters(), default.parameters()):
        torch.testing.assert_close(p, q * 2 ** 0.5 if name == to_out else q, rtol=0, atol=0, msg=name)
    weight = plain.layers[1][0].to_out.weight
    inner = 4 * 8  # heads x dim_head
    assert (2 * inner) ** -0.5 < weight.abs().max() <= inner ** -0.5


@pytest.mark.parametrize("gate_type", ["fixed", "lstm"])
def test_gradients_reach_every_parameter(gate_type):
    model = small_model(use_compressed_mem=True, gate_type=gate_type, recurrent_layers=(2, 3),
                        read_recurrent_layers=(1, 3)).train()
    wrapper = RecurrentTrainerWrapper(model)
    wrapper(tokens(2, 33)).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize("compressed", [True, False])
@pytest.mark.parametrize("blocks", [1, 2])
def test_reset_rows_start_afresh_and_leave_other_rows_alone(compressed, blocks):
    """Row 0 starts a new document at segment 3 of 5. Compressed memory keeps old entries for a while
    (a mask over entries); without it the XL memory's blocks of the old document are hidden whole
    until the new one's refill it (``MemoryRows``), with memories of one block and of two."""
    model = small_model(use_compressed_mem=compressed, recurrent_layers=(1, 2), xl_memory_blocks=blocks)
    x = tokens(2, 80)
    segments = x.split(16, dim=1)
    memories = states = None
    outputs = []
    for i, seg in enumerate(segments):
        reset = torch.tensor([i == 2, False])
        logits, memories, states = model(seg, xl_memories=memories, states=states, reset=reset)
        outputs.append(logits)
    got = torch.cat(outputs, dim=1)
    continued, _, _ = run_segments(model, x[1:], 16)
    fresh, _, _ = run_segments(model, x[:1, 32:], 16)
    torch.testing.assert_close(got[1:], continued, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[:1, 32:], fresh, rtol=1e-5, atol=1e-5)
    assert memories.blocks_since_reset is None  # every pre-reset entry has been pushed out


@pytest.mark.parametrize("blocks", [1, 2])
def test_memory_rows_hide_what_the_entry_mask_hides(blocks):
    """Without compressed memories, ``MemoryRows`` of each row's newest entries of its document allows
    exactly the keys the boolean mask over entries allows, from right after a reset until the
    memory's blocks are all the new document's."""
    from block_recurrent_transformer_pytorch.attention import MemoryRows

    model = small_model(use_compressed_mem=False, xl_memory_blocks=blocks)
    _, memories, _ = model(tokens(3, 16))
    n, m = 8, 8 + memories.length
    memories = memories.reset(torch.tensor([True, False, True]), model.config)
    for since in ([0, blocks, 0], [1, blocks, 0], [blocks, blocks, 1]):
        memories = dataclasses.replace(memories, blocks_since_reset=torch.tensor(since))
        rows = MemoryRows(memories.visible_entries(model.config))
        entries = F.pad(memories.memory_mask(model.config), (0, n), value=True)[:, None, None, :]
        assert torch.equal(rows.mask(n, m), entries)
        assert rows.visible.tolist() == [8 * s for s in since]


def test_state_dict_round_trip():
    model = small_model(use_compressed_mem=True)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    restored = small_model(seed=123, use_compressed_mem=True)
    restored.load_state_dict(torch.load(buffer))
    x = tokens(2, 16)
    torch.testing.assert_close(restored(x)[0], model(x)[0], rtol=0, atol=0)
    rebuilt = BlockRecurrentTransformer.from_config(model.config.to_dict())
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt(x)[0], model(x)[0], rtol=0, atol=0)


def test_wrapper_loss_matches_segment_losses():
    model = small_model()
    wrapper = RecurrentTrainerWrapper(model, xl_memories_dropout=0.5, state_dropout=0.5).eval()
    x = tokens(2, 33)
    loss_a, memories, states = model(x[:, :17], return_loss=True)
    loss_b, _, _ = model(x[:, 16:], return_loss=True, xl_memories=memories, states=states)
    torch.testing.assert_close(wrapper(x), (loss_a + loss_b) / 2)


def test_generate_leaves_callers_memories_and_states_untouched():
    model = small_model(use_compressed_mem=True)
    _, memories, states = model(tokens(1, 16))
    saved = (memories.keys_values().clone(), [s.clone() for s in states])
    new = model.generate(tokens(1, 3), 30, xl_memories=memories, states=states)
    assert new.shape == (1, 27)
    torch.testing.assert_close(memories.keys_values(), saved[0], rtol=0, atol=0)
    for s, before in zip(states, saved[1]):
        torch.testing.assert_close(s, before, rtol=0, atol=0)
    wrapper_new = RecurrentTrainerWrapper(model).generate(tokens(1, 3), 40, xl_memories=memories, states=states)
    assert wrapper_new.shape == (1, 37)
    torch.testing.assert_close(memories.keys_values(), saved[0], rtol=0, atol=0)


@pytest.mark.parametrize("options", [{}, dict(memory_kv_from_inputs=True, rotary_dim=4, kv_heads=2), dict(ff_glu=False)],
                         ids=["seed-options", "long-documents-options", "gelu-feedforward"])
def test_compiles_without_graph_breaks(options):
    """torch.compile(fullgraph=True) traces a whole segment: every block, layer and state update; also
    with the long-documents preset's model options (memories projected from their inputs, half-rotary heads,
    grouped key/value heads) and with the GELU feed-forward."""
    model = small_model(use_compressed_mem=True, use_flash_attn=True, **dict(recurrent_layers=(2, 3),
                                                                             read_recurrent_layers=(1, 3)), **options)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = tokens(2, 33)
    loss_a, memories, states = compiled(x[:, :17], return_loss=True)
    loss_b, _, _ = compiled(x[:, 16:], return_loss=True, xl_memories=memories, states=states)
    ref_a, ref_memories, ref_states = model(x[:, :17], return_loss=True)
    ref_b, _, _ = model(x[:, 16:], return_loss=True, xl_memories=ref_memories, states=ref_states)
    torch.testing.assert_close(torch.stack((loss_a, loss_b)), torch.stack((ref_a, ref_b)), rtol=1e-5, atol=1e-5)
    (loss_a + loss_b).backward()
    assert all(p.grad is not None for p in model.parameters())


def _gradients(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_backprop_through_k_segments_equals_one_long_graph():
    """bptt_segments=2 over two segments gives the gradients of one forward over both at once."""
    x = tokens(2, 33)
    long = small_model(max_seq_len=32, use_compressed_mem=True).train()
    F_loss, _, _ = long(x, return_loss=True)
    F_loss.backward()
    expected = _gradients(long)

    segmented = small_model(max_seq_len=16, use_compressed_mem=True).train()
    segmented.load_state_dict(long.state_dict())
    RecurrentTrainerWrapper(segmented, bptt_segments=2)(x).backward()
    got = _gradients(segmented)
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)

    truncated = small_model(max_seq_len=16, use_compressed_mem=True).train()
    truncated.load_state_dict(long.state_dict())
    RecurrentTrainerWrapper(truncated, bptt_segments=1)(x).backward()
    assert not torch.allclose(_gradients(truncated)["states.0.init_state"], expected["states.0.init_state"])


def test_activation_checkpointing_changes_nothing_but_memory():
    x = tokens(2, 33)
    plain = small_model(use_compressed_mem=True).train()
    checkpointed = small_model(use_compressed_mem=True, activation_checkpointing=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    loss_plain = RecurrentTrainerWrapper(plain)(x)
    loss_checkpointed = RecurrentTrainerWrapper(checkpointed)(x)
    torch.testing.assert_close(loss_checkpointed, loss_plain, rtol=0, atol=0)
    loss_plain.backward()
    loss_checkpointed.backward()
    expected = _gradients(plain)
    for name, grad in _gradients(checkpointed).items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-5, atol=1e-7, msg=name)


def test_embedding_init_std_sets_the_embeddings_scale_and_leaves_the_default_as_the_seeds():
    """1.0 (the default) keeps exactly nn.Embedding's own draw, as the seed had it (the model's first
    random numbers); another value redraws only the embeddings, at that scale."""
    default = small_model(seed=3)
    torch.manual_seed(3)
    assert torch.equal(default.token_emb.weight, torch.nn.Embedding(default.config.num_tokens, 32).weight)
    small = small_model(seed=3, embedding_init_std=0.02)
    assert abs(small.token_emb.weight.std().item() - 0.02) < 0.002
    with pytest.raises(ValueError, match="embedding_init_std must be a positive finite number, got -1"):
        small_model(embedding_init_std=-1)


def test_a_layer_reads_as_its_two_modules():
    layer = small_model().layers[0]
    attention, feed_forward = layer
    assert len(layer) == 2 and layer[0] is layer[-2] is attention and layer[1] is layer[-1] is feed_forward
    with pytest.raises(IndexError, match="a layer holds 2 modules"):
        layer[2]


def test_partial_rotary_rotates_its_channels_as_a_narrower_head_and_leaves_the_rest_position_free():
    """rotary_dim = r: the first r / 2 channel pairs get the tables of a head r wide (the same
    frequencies and xpos scales), the other pairs none (cos 1, sin 0, scale 1), so a query or key
    living on them alone is the same at every position; r = dim_head is the seed's full rotary."""
    full16, narrow8 = (RotaryEmbedding(d, max_memory=24, block_width=8) for d in (16, 8))
    partial = RotaryEmbedding(16, max_memory=24, block_width=8, rotary_dim=8)
    assert torch.equal(RotaryEmbedding(16, max_memory=24, block_width=8, rotary_dim=16).tables, full16.tables)
    rotated, free = [0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]  # pair i is (i, i + 8)
    torch.testing.assert_close(partial.tables[..., rotated], narrow8.tables, rtol=1e-6, atol=0)
    assert torch.equal(partial.tables[..., free], torch.tensor([1.0, 0.0, 1.0])[:, None, None].expand(3, 32, 8))
    content = torch.zeros(32, 16)
    content[:, free] = torch.randn(8)
    cos, sin, scale = partial(-24, 32)
    assert torch.equal(apply_rotary(content, cos, sin, scale), content)


def test_rotary_in_bf16_rounds_once_from_the_exact_float32_rotation():
    """bf16 queries/keys are rotated with the float32 tables in float32 and rounded once: the result
    is exactly the float32 rotation rounded to bf16 (tables cast to bf16 would round the phase too)."""
    cos, sin, scale = RotaryEmbedding(64, xpos_scale_base=512, max_memory=2048, block_width=1024)(-2048, 3072)
    t = torch.randn(2, 3072, 64).bfloat16()
    exact = (t.float() * cos + torch.cat((-t.float()[..., 32:], t.float()[..., :32]), dim=-1) * sin) * scale
    got = apply_rotary(t, cos, sin, scale)
    assert got.dtype == torch.bfloat16 and torch.equal(got, exact.bfloat16())


def test_a_partial_rotary_model_decodes_exactly_as_its_full_forward():
    """Cached decoding positions every key once; with rotary_dim < dim_head it must still agree with
    the full forward, token by token, across block and segment boundaries."""
    model = small_model(rotary_dim=4, use_compressed_mem=True)
    x = tokens(2, 40)
    expected, _, _ = run_segments(model, x, 16)
    got = decode_each_step(CachedDecoder(model, *model.prepare(2)), x, 3)
    torch.testing.assert_close(got, expected[:, 2:], rtol=1e-5, atol=1e-5)
