"""Inputs and settings at the edges: odd token dtypes, empty batches, malformed memories, training
configurations where a part of the model cannot learn, sampling at extreme temperatures."""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import replace

import pytest
import torch

from block_recurrent_transformer_pytorch import RecurrentTrainerWrapper, TrainStep

from .helpers import run_segments, small_model, tokens


def test_a_state_write_that_cannot_learn_is_warned_about():
    """One block per segment with bptt over one segment: the written state is read only after the
    detach, so the write's parameters get no gradient (checked), and the wrapper says so once."""
    model = small_model(max_seq_len=8).train()
    with pytest.warns(UserWarning, match=r"max_seq_len == block_width \(8\).*bptt_segments >= 2") as caught:
        wrapper = RecurrentTrainerWrapper(model)
    assert caught[0].filename == __file__  # points at the caller's line
    wrapper(tokens(2, 25)).backward()
    write = model.states[0]
    assert all(p.grad is None or not p.grad.any() for p in (write.to_write_q.weight, write.to_update.weight,
                                                              write.gate.bias))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to say: two blocks per segment, or bptt over segments
        TrainStep(RecurrentTrainerWrapper(small_model()), cuda_graph=False)
        RecurrentTrainerWrapper(model, bptt_segments=2)
        RecurrentTrainerWrapper(small_model(max_seq_len=8, recurrent_layers=()))  # no state to write


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32])
def test_any_integer_token_dtype_gives_the_int64_results(dtype):
    """uint8 (a byte corpus), int16 and int32 ids reach nn.Embedding as int64, wherever tokens enter."""
    model = small_model()
    x = tokens(2, 33)
    expected, _, _ = model(x[:, :16])
    got, _, _ = model(x[:, :16].to(dtype))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert model(x[:, :17].to(dtype), return_loss=True)[0] == model(x[:, :17], return_loss=True)[0]
    wrapper = RecurrentTrainerWrapper(model)
    assert wrapper(x.to(dtype)) == wrapper(x)
    for use_cache in (True, False):
        assert torch.equal(model.generate(x[:, :5].to(dtype), 12, temperature=0, use_cache=use_cache),
                           model.generate(x[:, :5], 12, temperature=0, use_cache=use_cache))
        streamed = torch.stack(list(model.stream(x[:, :5].to(dtype), 7, temperature=0, use_cache=use_cache)), 1)
        assert torch.equal(streamed, model.generate(x[:, :5], 12, temperature=0))
    step = TrainStep(RecurrentTrainerWrapper(model), cuda_graph=False, amp_dtype=None)
    assert step(x.to(dtype)) == step(x)


def test_memories_of_a_wrong_dtype_or_xl_length_are_rejected():
    model = small_model()
    _, memories, _ = model(tokens(2, 16))
    for dtype in (torch.bool, torch.int64):
        with pytest.raises(TypeError, match=rf"xl_memories.xl must hold floating-point keys/values, got dtype {dtype}"):
            model(tokens(2, 8), xl_memories=replace(memories, xl=memories.xl.to(dtype)))
    for length in (3, 7):
        with pytest.raises(ValueError, match=rf"xl_memories.xl must hold whole blocks: a multiple of block_width=8 "
                                             rf"positions up to xl_memory_blocks=1 .*got {length}"):
            model(tokens(2, 8), xl_memories=replace(memories, xl=memories.xl[..., :length, :]))
    compressed = small_model(use_compressed_mem=True)
    _, memories, _ = run_segments(compressed, tokens(2, 32), 16)
    with pytest.raises(TypeError, match="xl_memories.compressed must hold floating-point"):
        compressed(tokens(2, 8), xl_memories=replace(memories, compressed=memories.compressed.to(torch.int64)))


KNN = dict(knn_layers=(3,), knn_memory_size=24, knn_top_k=4)
HAS_FAISS = importlib.util.find_spec("faiss") is not None and \
    importlib.util.find_spec("memorizing_transformers_pytorch") is not None


@pytest.mark.parametrize("options", [
    dict(), dict(KNN), dict(KNN, knn_retrieval="routed"),
    dict(KNN, knn_retrieval="query_routed", block_width=16, knn_memory_size=32, knn_route_groups=1),
    pytest.param(dict(KNN, knn_backend="faiss"), marks=pytest.mark.skipif(not HAS_FAISS, reason="needs faiss")),
])
def test_empty_inputs_give_empty_outputs(options):
    """A batch of 0 rows or 0 tokens gives logits of that shape (no division by the empty batch in
    the kNN search), and generating for 0 rows gives (0, new tokens), past several blocks."""
    model = small_model(**options)
    for batch, length in ((0, 16), (0, 0), (2, 0)):
        logits, _, _ = model(tokens(batch, length))
        assert logits.shape == (batch, length, 64)
    _, memories, states = run_segments(model, tokens(2, 48), 16)  # a store with entries
    logits, _, _ = model(tokens(2, 0), xl_memories=memories, states=states)
    assert logits.shape == (2, 0, 64)
    for use_cache in (True, False):
        assert model.generate(tokens(0, 3), 40, use_cache=use_cache).shape == (0, 37)


@pytest.mark.parametrize("flag", ["return_loss", "detach", "use_cache", "return_memories_and_states", "compile"])
def test_flags_must_be_bools(flag):
    """A truthy stand-in ("no", 0, None) would silently act as True or False: refused, named."""
    model = small_model()
    calls = {
        "return_loss": [lambda v: model(tokens(1, 9), return_loss=v)],
        "detach": [lambda v: model(tokens(1, 8), detach=v)],
        "use_cache": [lambda v: model.generate(tokens(1, 3), 6, use_cache=v),
                      lambda v: model.stream(tokens(1, 3), 3, use_cache=v)],
        "return_memories_and_states": [lambda v: model.generate(tokens(1, 3), 6, return_memories_and_states=v),
                                       lambda v: RecurrentTrainerWrapper(model)(tokens(1, 17),
                                                                                return_memories_and_states=v)],
        "compile": [lambda v: model.generate(tokens(1, 3), 6, compile=v)],
    }[flag]
    for call in calls:
        for value in ("no", 0, None):
            with pytest.raises(TypeError, match=rf"{flag} must be a bool \(True or False\), got {value!r}"):
                call(value)
