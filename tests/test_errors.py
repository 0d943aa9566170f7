"""Bad input gets a clear exception naming the argument, what was given and what is allowed."""

from __future__ import annotations

import pytest
import torch

from block_recurrent_transformer_pytorch import BlockRecurrentTransformer, RecurrentTrainerWrapper

from .helpers import VOCAB, small_model, tokens

BASE = dict(num_tokens=VOCAB, dim=32, depth=3, dim_head=8, heads=4, max_seq_len=16, block_width=8)


@pytest.mark.parametrize("overrides, error, words", [
    (dict(max_seq_len=20), ValueError, ["max_seq_len (20)", "block_width (8)"]),
    (dict(recurrent_layers=(0,)), ValueError, ["recurrent_layers", "1..depth=3", "(0,)"]),
    (dict(recurrent_layers=(4,)), ValueError, ["recurrent_layers", "1..depth=3"]),
    (dict(recurrent_layers=(2, 2)), ValueError, ["recurrent_layers", "repeat", "(2, 2)"]),
    (dict(recurrent_layers=(2,), read_recurrent_layers=(3,)), ValueError, ["read_recurrent_layers", "layer 3", "layer 2"]),
    (dict(recurrent_layers=(2,), read_recurrent_layers=(1, 2)), ValueError, ["read_recurrent_layers", "one read layer"]),
    (dict(recurrent_layers=(1,), read_recurrent_layers=(5,)), ValueError, ["read_recurrent_layers", "1..depth=3"]),
    (dict(recurrent_layers=("2",)), TypeError, ["recurrent_layers", "not instance of int"]),
    (dict(dim="32"), TypeError, ["dim", "'32'"]),
    (dict(heads=4, kv_heads=3), ValueError, ["kv_heads (3)", "heads (4)"]),
    (dict(gate_type="gru"), TypeError, ["gate_type", "'gru'", "fixed"]),
    (dict(dim_head=7), ValueError, ["dim_head must be even", "got 7"]),
    (dict(ff_mult=0.01), ValueError, ["ff_mult (0.01)", "no hidden unit"]),
    (dict(rotary_theta=0), ValueError, ["rotary_theta", "positive finite", "got 0"]),
    (dict(fixed_gate_retention=1.0), ValueError, ["fixed_gate_retention", "between 0 and 1", "got 1.0"]),
    (dict(fixed_gate_retention=0), ValueError, ["fixed_gate_retention", "positive finite", "got 0"]),
    (dict(gate_type="lstm", fixed_gate_retention=0.9), ValueError, ["fixed_gate_retention", "gate_type='fixed'", "0.9"]),
    (dict(fixed_gate_max_half_life=0.5), ValueError, ["fixed_gate_max_half_life", "1..1e+06", "got 0.5"]),
    (dict(fixed_gate_max_half_life=float("inf")), ValueError, ["fixed_gate_max_half_life", "1..1e+06", "got inf"]),
    (dict(fixed_gate_max_half_life=float("nan")), ValueError, ["fixed_gate_max_half_life", "1..1e+06", "got nan"]),
    (dict(fixed_gate_max_half_life=2e6), ValueError, ["fixed_gate_max_half_life", "float32", "got 2000000.0"]),
    (dict(fixed_gate_max_half_life=True), ValueError, ["fixed_gate_max_half_life", "got True"]),
    (dict(fixed_gate_max_half_life=64, fixed_gate_retention=0.9), ValueError,
     ["fixed_gate_max_half_life=64", "fixed_gate_retention=0.5", "fixed_gate_retention=0.9"]),
    (dict(fixed_gate_max_half_life=64, gate_type="lstm"), ValueError,
     ["fixed_gate_max_half_life=64", "gate_type='fixed'", "gate_type='lstm'"]),
    (dict(rotary_dim=3), ValueError, ["rotary_dim", "even int in 2..dim_head", "got 3"]),
    (dict(rotary_dim=0), ValueError, ["rotary_dim", "got 0"]),
    (dict(rotary_dim=64), ValueError, ["rotary_dim", "dim_head=", "got 64"]),
    (dict(rotary_dim=4.0), TypeError, ["rotary_dim", "4.0"]),
    (dict(qk_rmsnorm_scale=float("nan")), ValueError, ["qk_rmsnorm_scale", "got nan"]),
    (dict(use_flash_attn=2), TypeError, ["use_flash_attn"]),
    (dict(use_flash_attn="yes"), TypeError, ["use_flash_attn", "'yes'"]),
    (dict(ff_glu="no"), TypeError, ["ff_glu", "'no'"]),
    (dict(detach_block_memories="yes"), TypeError, ["detach_block_memories", "'yes'"]),
    (dict(dim=32.0), TypeError, ["dim", "32.0"]),
    (dict(depth=1.5), TypeError, ["depth", "1.5"]),
    (dict(use_compressed_mem=True, compressed_mem_factor=3), ValueError, ["compressed_mem_factor", "got 3"]),
    (dict(num_state_vectors=0), ValueError, ["num_state_vectors", "got 0"]),
])
def test_bad_constructor_arguments(overrides, error, words):
    with pytest.raises(error) as info:
        BlockRecurrentTransformer(**{**BASE, **overrides})
    for word in words:
        assert word in str(info.value)


def test_recurrent_layers_accepts_any_sequence_of_ints():
    assert BlockRecurrentTransformer(**BASE, recurrent_layers=[1, 3]).config.recurrent_layers == (1, 3)


def test_sequence_longer_than_max_seq_len():
    with pytest.raises(ValueError, match=r"17 tokens.*max_seq_len=16"):
        small_model()(tokens(1, 17))


@pytest.mark.parametrize("x, error, pattern", [
    (torch.rand(1, 8), TypeError, "integer token ids, got dtype torch.float32"),
    (torch.full((1, 8), VOCAB), ValueError, rf"\[{VOCAB}, {VOCAB}\].*0..{VOCAB - 1}"),
    (torch.full((1, 8), -1), ValueError, r"\[-1, -1\]"),
    (torch.zeros(8, dtype=torch.long), ValueError, r"\(batch, length\), got \(8,\)"),
])
def test_bad_tokens(x, error, pattern):
    with pytest.raises(error, match=pattern):
        small_model()(x)


def test_wrong_memories_and_states():
    model = small_model()
    _, memories, states = model(tokens(2, 16))
    other = small_model(depth=2)
    _, other_memories, _ = other(tokens(2, 16))
    with pytest.raises(ValueError, match=r"batch=1.*got \(3, 2, 2,"):
        model(tokens(1, 8), xl_memories=memories)
    with pytest.raises(ValueError, match=r"depth=3.*got \(2, 2, 2"):
        model(tokens(2, 8), xl_memories=other_memories)
    with pytest.raises(ValueError, match=r"one tensor per layer \(depth=3\), got 1"):
        model(tokens(2, 8), xl_memories=[memories.xl[0]])
    with pytest.raises(ValueError, match=r"one \(2, batch, length, dim_head\) tensor per layer"):
        model(tokens(2, 8), xl_memories=[memories.xl[0, 0, 0]] * 3)
    with pytest.raises(TypeError, match="Memories object"):
        model(tokens(2, 8), xl_memories=memories.xl)
    with pytest.raises(ValueError, match=r"states\[0\] must have shape \(1, 6, 32\)"):
        model(tokens(1, 8), states=states)
    with pytest.raises(ValueError, match=r"one tensor per recurrent layer \(2,\), got 2"):
        model(tokens(2, 8), states=states + states)
    with pytest.raises(ValueError, match=r"states\[0\] is on meta"):
        model(tokens(2, 8), states=[states[0].to("meta")])
    with pytest.raises(ValueError, match="reset must be a bool tensor"):
        model(tokens(2, 8), reset=torch.tensor([1, 0]))


def test_compressed_memory_mismatch():
    plain = small_model()
    compressed = small_model(use_compressed_mem=True)
    _, plain_memories, _ = plain(tokens(1, 16))
    _, compressed_memories, _ = compressed(tokens(1, 16))
    with pytest.raises(ValueError, match="no compressed memory"):
        compressed(tokens(1, 8), xl_memories=plain_memories)
    with pytest.raises(ValueError, match="does not use compressed memory"):
        plain(tokens(1, 8), xl_memories=compressed_memories)


@pytest.mark.parametrize("length", [16, 32, 34, 8])
def test_wrapper_input_length(length):
    wrapper = RecurrentTrainerWrapper(small_model())
    with pytest.raises(ValueError, match=rf"{length} tokens per row.*k \* 16 \+ 1"):
        wrapper(tokens(1, length))


def test_wrapper_arguments():
    with pytest.raises(ValueError, match=r"state_dropout.*\[0, 1\], got 1.5"):
        RecurrentTrainerWrapper(small_model(), state_dropout=1.5)
    with pytest.raises(TypeError, match="transformer"):
        RecurrentTrainerWrapper(torch.nn.Linear(2, 2))
