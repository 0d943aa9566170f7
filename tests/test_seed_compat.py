"""A drop-in for the seed package 0.4.4: its weights (``from_seed``, checked against outputs the seed
itself computed, tests/fixtures), its memories as a list, its call signatures and attributes, and
seed-style scripts run unchanged."""

from __future__ import annotations

import inspect
import io
import os
import random

import numpy as np
import pytest
import torch

from block_recurrent_transformer_pytorch import BlockRecurrentTransformer, Memories, RecurrentTrainerWrapper

from .helpers import VOCAB, run_segments, small_model, tokens

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def load_fixture(name: str) -> dict:
    return torch.load(os.path.join(FIXTURES, f"seed_{name}.pt"))  # weights_only=True, torch's default


# ---- from_seed: the seed's outputs, to 1e-5 --------------------------------------------------------

@pytest.mark.parametrize("name", ["plain", "compressed"])
def test_from_seed_reproduces_the_seed(name):
    """Logits, memories (the seed's list layout) and states of the seed's model, segment by segment.
    'compressed': compressed memory, two recurrent layers given out of order, one state read two
    layers below its writer, qk-rmsnorm on every layer."""
    fixture = load_fixture(name)
    model = BlockRecurrentTransformer.from_seed(fixture["state_dict"], **fixture["config"]).eval()
    memories = states = None
    with torch.no_grad():
        for i, segment in enumerate(fixture["segments"]):
            full = segment["tokens"].shape[1] % model.block_width == 0
            before = memories
            logits, memories, new_states = model(segment["tokens"], xl_memories=memories, states=states)
            torch.testing.assert_close(logits, segment["logits"], **TOLERANCE)
            assert len(memories) == len(segment["memories"])
            for ours, seeds in zip(memories, segment["memories"]):
                torch.testing.assert_close(ours, seeds, **TOLERANCE)
            if full:
                for ours, seeds in zip(new_states, segment["states"]):
                    torch.testing.assert_close(ours, seeds, **TOLERANCE)
            else:
                # the one deliberate difference: the seed also wrote the states after a trailing
                # partial block; ours commits full blocks only: the states after the last full one
                committed = segment["tokens"].shape[1] // model.block_width * model.block_width
                _, _, expected = model(segment["tokens"][:, :committed], xl_memories=before, states=states)
                for ours, want, seeds in zip(new_states, expected, segment["states"]):
                    torch.testing.assert_close(ours, want, rtol=0, atol=0)
                    assert not torch.allclose(ours, seeds, **TOLERANCE)
            states = new_states
    assert memories.compressed is not None if name == "compressed" else memories.compressed is None


def test_from_seed_takes_a_ddp_or_compiled_models_state_dict():
    """Keys under DistributedDataParallel's ``module.`` or torch.compile's ``_orig_mod.`` load as the bare ones."""
    fixture = load_fixture("plain")
    bare = BlockRecurrentTransformer.from_seed(fixture["state_dict"], **fixture["config"])
    for prefix in ("module.", "_orig_mod.", "module._orig_mod."):
        wrapped = {prefix + key: value for key, value in fixture["state_dict"].items()}
        model = BlockRecurrentTransformer.from_seed(wrapped, **fixture["config"])
        for (name, ours), theirs in zip(model.state_dict().items(), bare.state_dict().values()):
            assert torch.equal(ours, theirs), name


@pytest.mark.parametrize("name", ["plain", "compressed"])
def test_seed_memories_and_states_continue_in_our_model(name):
    """The seed's own returned list of memories and its states, passed to the converted model,
    give the seed's next segment."""
    fixture = load_fixture(name)
    model = BlockRecurrentTransformer.from_seed(fixture["state_dict"], **fixture["config"]).eval()
    segments = fixture["segments"]
    with torch.no_grad():
        for before, segment in zip(segments[:2], segments[1:3]):
            logits, _, states = model(segment["tokens"], xl_memories=before["memories"], states=before["states"])
            torch.testing.assert_close(logits, segment["logits"], **TOLERANCE)
            for ours, seeds in zip(states, segment["states"]):
                torch.testing.assert_close(ours, seeds, **TOLERANCE)


def test_from_seed_model_saves_and_loads():
    fixture = load_fixture("compressed")
    model = BlockRecurrentTransformer.from_seed(fixture["state_dict"], **fixture["config"]).eval()
    assert model.config.state_update_bias and model.config.recurrent_layers == (2, 4)
    buffer = io.BytesIO()
    torch.save({"config": model.config.to_dict(), "model": model.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer)
    loaded = BlockRecurrentTransformer.from_config(checkpoint["config"]).eval()
    loaded.load_state_dict(checkpoint["model"])
    x = fixture["segments"][0]["tokens"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], model(x)[0], rtol=0, atol=0)
        torch.testing.assert_close(loaded(x)[0], fixture["segments"][0]["logits"], **TOLERANCE)


def test_from_seed_bad_arguments():
    fixture = load_fixture("plain")
    with pytest.raises(TypeError, match="seed 0.4.4 constructor's keywords.*kv_heads"):
        BlockRecurrentTransformer.from_seed(fixture["state_dict"], **fixture["config"], kv_heads=2)
    with pytest.raises(TypeError, match=r"missing \['depth'\]"):
        BlockRecurrentTransformer.from_seed(fixture["state_dict"], num_tokens=32, dim=24)
    with pytest.raises(ValueError, match="lacks 'layers.0.0.attn.q_scale'"):
        BlockRecurrentTransformer.from_seed(fixture["state_dict"], **{**fixture["config"], "recurrent_layers": (1, 2)})
    with pytest.raises(ValueError, match="no place for.*'layers.2.0.norm.beta'"):
        BlockRecurrentTransformer.from_seed(fixture["state_dict"], **{**fixture["config"], "depth": 2})


def test_our_defaults_unchanged_by_the_state_update_bias():
    """The new config field defaults to off: no bias parameter, the same weights and results as before."""
    model = small_model()
    assert not model.config.state_update_bias and model.states[0].to_update.bias is None
    assert "states.0.to_update.bias" not in model.state_dict()


# ---- memories as the seed's list ---------------------------------------------------------------------

def test_memories_read_as_the_seeds_list():
    model = small_model(use_compressed_mem=True)
    _, memories, _ = run_segments(model, tokens(2, 48), 16)
    assert len(memories) == 3
    kv = memories.keys_values()
    for i, layer in enumerate(memories):
        # keys and values stacked first, [compressed | XL] along the length
        assert layer.shape == (2, 2, 4 + 8, 8)
        torch.testing.assert_close(layer, kv[i, :, :, 0], rtol=0, atol=0)
        torch.testing.assert_close(memories[i - 3], layer, rtol=0, atol=0)
    assert [t.shape for t in memories[1:]] == [(2, 2, 12, 8)] * 2
    moved = memories.to(torch.float64)
    assert isinstance(moved, Memories) and moved[0].dtype == torch.float64 and memories[0].dtype == torch.float32
    assert memories.to("cpu")[0].device.type == "cpu"


@pytest.mark.parametrize("compressed", [False, True])
def test_a_list_of_layers_continues_exactly_as_memories(compressed):
    model = small_model(use_compressed_mem=compressed)
    x = tokens(2, 64)
    _, memories, states = run_segments(model, x[:, :48], 16)
    expected, expected_memories, _ = model(x[:, 48:], xl_memories=memories, states=states)
    for layers in (list(memories), tuple(memories), [t.clone() for t in memories]):
        logits, next_memories, _ = model(x[:, 48:], xl_memories=layers, states=states)
        torch.testing.assert_close(logits, expected, rtol=0, atol=0)
        for got, want in zip(next_memories, expected_memories):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_memories_and_states_load_with_torch_default_weights_only():
    for model in (small_model(use_compressed_mem=True), small_model(knn_layers=(3,), knn_memory_size=24, knn_top_k=4)):
        x = tokens(2, 48)
        _, memories, states = run_segments(model, x[:, :32], 16)
        buffer = io.BytesIO()
        torch.save({"memories": memories, "states": states}, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer)  # weights_only=True
        assert isinstance(loaded["memories"], Memories)
        expected = model(x[:, 32:], xl_memories=memories, states=states)[0]
        torch.testing.assert_close(model(x[:, 32:], xl_memories=loaded["memories"], states=loaded["states"])[0],
                                   expected, rtol=0, atol=0)
        if model.config.knn_layers:
            with pytest.raises(ValueError, match="cannot carry the kNN store"):
                model(x[:, 32:], xl_memories=list(memories), states=states)


# ---- signatures, return_memories_and_states, attributes --------------------------------------------

def test_signatures_keep_the_seeds_positional_order():
    forward = inspect.signature(BlockRecurrentTransformer.forward).parameters
    assert list(forward)[:6] == ["self", "x", "return_loss", "xl_memories", "states", "return_memories_and_states"]
    assert all(p.kind == p.KEYWORD_ONLY for name, p in forward.items() if name in ("reset", "detach"))
    generate = inspect.signature(BlockRecurrentTransformer.generate).parameters
    assert list(generate)[:8] == ["self", "prime", "length", "xl_memories", "states", "temperature", "filter_thres",
                                  "return_memories_and_states"]
    assert all(p.kind == p.KEYWORD_ONLY for p in list(generate.values())[8:])
    wrapper = inspect.signature(RecurrentTrainerWrapper.forward).parameters
    assert list(wrapper)[:3] == ["self", "x", "return_memories_and_states"]
    assert all(p.kind == p.KEYWORD_ONLY for p in list(wrapper.values())[3:])
    init = inspect.signature(RecurrentTrainerWrapper.__init__).parameters
    assert list(init)[:4] == ["self", "transformer", "xl_memories_dropout", "state_dropout"]
    assert init["bptt_segments"].kind == inspect.Parameter.KEYWORD_ONLY


def test_return_memories_and_states():
    model = small_model()
    x = tokens(2, 17)
    logits, memories, states = model(x[:, :16], False, None, None, True)  # the seed's positional order
    assert isinstance(memories, Memories) and len(states) == 1
    assert model(x[:, :16], return_memories_and_states=False)[1:] == (None, None)
    loss, memories, states = model(x, True, memories, states, False)
    assert loss.ndim == 0 and memories is None and states is None
    # None (the default): always returned, also for fewer than max_seq_len tokens (the seed: None, None)
    _, memories, states = model(x[:, :8])
    assert isinstance(memories, Memories) and len(states) == 1
    with pytest.raises(TypeError, match="return_memories_and_states must be a bool or None"):
        model(x[:, :8], return_memories_and_states="yes")
    with pytest.raises(TypeError):
        model(x[:, :8], False, None, None, None, None)  # reset is keyword-only
    new, memories, states = model.generate(x[:, :4], 12, None, None, 0.0, 0.9, True)
    assert new.shape == (2, 8) and isinstance(memories, Memories)
    loss, memories, states = RecurrentTrainerWrapper(model)(tokens(2, 33), True)
    assert loss.ndim == 0 and len(memories) == 3


def test_seed_attributes_are_read_only():
    model = small_model(recurrent_layers=(2, 3), read_recurrent_layers=(1, 3), ignore_index=0)
    assert model.ignore_index == 0 and model.recurrent_layers == (2, 3) and model.read_recurrent_layers == (1, 3)
    assert model.max_seq_len == 16 and model.block_width == 8
    for name in ("ignore_index", "recurrent_layers", "read_recurrent_layers", "max_seq_len", "block_width"):
        with pytest.raises(AttributeError, match=rf"{name} is fixed at construction \(model.config.{name}"):
            setattr(model, name, 1)


def test_seed_module_path():
    from block_recurrent_transformer_pytorch.block_recurrent_transformer_pytorch import (
        BlockRecurrentTransformer as Model, RecurrentTrainerWrapper as Wrapper)

    assert Model is BlockRecurrentTransformer and Wrapper is RecurrentTrainerWrapper


# ---- states returned are the caller's own --------------------------------------------------------

@pytest.mark.parametrize("batch", [1, 2])
def test_states_returned_are_own_tensors(batch):
    model = small_model()
    init = model.states[0].init_state.detach().clone()
    _, _, states = model(tokens(batch, 5))  # shorter than a block: nothing written
    states[0].mul_(0.5)
    torch.testing.assert_close(model.states[0].init_state, init, rtol=0, atol=0)
    mine = [torch.randn(batch, 6, 32)]
    before = mine[0].clone()
    _, _, states = model(tokens(batch, 5), states=mine)
    states[0].mul_(0.5)
    torch.testing.assert_close(mine[0], before, rtol=0, atol=0)
    _, _, states = model.generate(tokens(batch, 2), 4, states=mine, return_memories_and_states=True)
    states[0].mul_(0.5)
    torch.testing.assert_close(mine[0], before, rtol=0, atol=0)
    _, _, states = model(tokens(batch, 5), detach=False)  # the graph kept: still a copy
    states[0].detach().mul_(0.5)
    torch.testing.assert_close(model.states[0].init_state, init, rtol=0, atol=0)


# ---- integer- and bool-like values ----------------------------------------------------------------

def test_integer_and_bool_like_values_are_accepted():
    model = BlockRecurrentTransformer(num_tokens=np.int64(VOCAB), dim=np.int32(32), depth=torch.tensor(3),
                                      dim_head=np.int64(8), heads=4, max_seq_len=np.int64(16), block_width=8,
                                      recurrent_layers=(np.int64(2),), read_recurrent_layers=[np.int64(1)],
                                      use_flash_attn=1, use_compressed_mem=np.bool_(True), all_layers_qk_rmsnorm=0,
                                      ff_mult=np.float32(2.0), ignore_index=np.int64(-1))
    config = model.config
    assert type(config.dim) is int and config.dim == 32 and type(config.depth) is int
    assert config.use_flash_attn is True and config.use_compressed_mem is True and config.all_layers_qk_rmsnorm is False
    assert config.recurrent_layers == (2,) and type(config.recurrent_layers[0]) is int
    assert type(config.ff_mult) is float and config.ignore_index == -1
    model(tokens(1, 16))
    for bad, error in ((dict(dim=1.5), "dim"), (dict(use_flash_attn="yes"), "use_flash_attn"),
                       (dict(use_flash_attn=2), "use_flash_attn"), (dict(dim=np.float64(32.0)), "dim")):
        with pytest.raises(TypeError, match=error):
            BlockRecurrentTransformer(**{**dict(num_tokens=VOCAB, dim=32, depth=3), **bad})


# ---- seed-style scripts, unchanged -----------------------------------------------------------------

def test_seed_readme_usage_unchanged():
    """The seed README's usage (its full size: a few seconds on CPU)."""
    import torch
    from block_recurrent_transformer_pytorch import BlockRecurrentTransformer

    model = BlockRecurrentTransformer(
        num_tokens = 20000,             # vocab size
        dim = 512,                      # model dimensions
        depth = 6,                      # depth
        dim_head = 64,                  # attention head dimensions
        heads = 8,                      # number of attention heads
        max_seq_len = 1024,             # the total receptive field of the transformer, in the paper this was 2 * block size
        block_width = 512,              # block size - total receptive field is max_seq_len, 2 * block size in paper. the block furthers receives memories and states from the previous block, which is 1 more depth
        num_state_vectors = 512,        # number of state vectors, i believe this was a single block size in the paper, but can be any amount
        recurrent_layers = (4,),        # where to place the recurrent layer(s) for states with fixed simple gating
        use_compressed_mem = False,     # whether to use compressed memories of a single block width, from https://arxiv.org/abs/1911.05507
        compressed_mem_factor = 4,      # compression factor of compressed memories
        use_flash_attn = True           # use flash attention, if on pytorch 2.0
    )

    seq = torch.randint(0, 2000, (1, 1024))

    with torch.no_grad():
        out, mems1, states1 = model(seq)
        out, mems2, states2 = model(seq, xl_memories = mems1, states = states1)
        out, mems3, states3 = model(seq, xl_memories = mems2, states = states2)

    assert out.shape == (1, 1024, 20000)
    assert len(mems3) == 6 and mems3[0].shape == (2, 1, 512, 64) and states3[0].shape == (1, 512, 512)


def test_seed_train_loop_style_script_unchanged(tmp_path):
    """A training loop as the seed's train.py and its users wrote them: the wrapper, memories
    inspected with len/indexing, saved with torch.save and loaded with torch.load, fed back."""
    from block_recurrent_transformer_pytorch import BlockRecurrentTransformer, RecurrentTrainerWrapper

    # model.eval() leaves the wrapper in training mode, so its dropout still draws (as the seed's) from
    # Python's random: seeded, so that whatever ran before, no draw drops the last call's memories
    random.seed(0)
    torch.manual_seed(0)
    model = BlockRecurrentTransformer(
        num_tokens = 256,
        dim = 32,
        depth = 4,
        dim_head = 8,
        heads = 4,
        max_seq_len = 32,
        block_width = 16,
        num_state_vectors = 16,
        recurrent_layers = (3,),
        use_compressed_mem = True,
        compressed_mem_factor = 4,
        use_flash_attn = False
    )
    train_wrapper = RecurrentTrainerWrapper(
        model,
        xl_memories_dropout = 0.1,
        state_dropout = 0.1,
    )
    optim = torch.optim.Adam(model.parameters(), lr = 1e-3)
    data = torch.randint(0, 256, (2, 32 * 2 + 1))

    for i in range(2):
        model.train()
        loss = train_wrapper(data)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        optim.step()
        optim.zero_grad()

    model.eval()
    with torch.no_grad():
        loss, mems, states = train_wrapper(data, return_memories_and_states = True)
    assert len(mems) == 4
    assert all(m.shape == (2, 2, 8 + 16, 8) for m in mems)  # compressed half block, then the XL block
    assert mems[-1].shape[0] == 2 and len(states) == 1
    keys, values = mems[0]

    path = tmp_path / 'mems.pt'
    torch.save(dict(mems = mems, states = states), str(path))
    saved = torch.load(str(path))
    mems, states = saved['mems'], saved['states']

    mems = [m.detach() for m in mems]  # as a list of tensors, in the seed's layout
    seq = torch.randint(0, 256, (2, 32))
    with torch.no_grad():
        logits, next_mems, next_states = model(seq, xl_memories = mems, states = states)
        expected, _, _ = model(seq, xl_memories = saved['mems'], states = saved['states'])
    torch.testing.assert_close(logits, expected, rtol = 0, atol = 0)

    sample = train_wrapper.generate(seq[:, :4], 40)
    assert sample.shape == (2, 36)
