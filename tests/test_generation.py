"""Cached generation computes exactly what the full forward computes, token by token."""

from __future__ import annotations

import pytest
import torch

from block_recurrent_transformer_pytorch import RecurrentTrainerWrapper
from block_recurrent_transformer_pytorch.generation import CachedDecoder, ReferenceDecoder
from block_recurrent_transformer_pytorch.sampling import check_sampling, sample

from .helpers import VOCAB, assert_decoding_equals_the_full_forward, decode_each_step, run_segments, small_model, tokens

# two recurrent layers, one read below its write layer
RECURRENT = dict(recurrent_layers=(2, 3), read_recurrent_layers=(1, 3))


@pytest.mark.parametrize("decoder_cls", [CachedDecoder, ReferenceDecoder])
@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("prefill", [1, 5, 8, 11])
def test_every_step_equals_the_full_forward(decoder_cls, compressed, prefill):
    """44 tokens: five block boundaries and two segment boundaries (blocks of 8, segments of 16)."""
    model = small_model(use_compressed_mem=compressed, **RECURRENT)
    assert_decoding_equals_the_full_forward(model, decoder_cls, prefill)


def test_recurrent_layers_without_qk_rmsnorm_decode_as_their_full_forward():
    """recurrent_layers_qk_rmsnorm=False leaves the recurrent layers' attention without qk-norm while
    their states keep it: cached decoding must agree with the full forward, token by token."""
    model = small_model(use_compressed_mem=True, recurrent_layers_qk_rmsnorm=False, **RECURRENT)
    x = tokens(2, 44)
    expected, _, _ = run_segments(model, x, 16)
    got = decode_each_step(CachedDecoder(model, *model.prepare(2)), x, 5)
    torch.testing.assert_close(got, expected[:, 4:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_decoding_continues_from_passed_memories_and_states(kv_heads):
    model = small_model(use_compressed_mem=True, kv_heads=kv_heads, **RECURRENT)
    x = tokens(1, 40)
    expected, _, _ = run_segments(model, x, 16)
    _, memories, states = run_segments(model, x[:, :16], 16)
    decoder = CachedDecoder(model, memories, states)
    with torch.no_grad():
        got = torch.stack([decoder.append(x[:, t:t + 1]) for t in range(16, 40)], dim=1)
    torch.testing.assert_close(got, expected[:, 16:], rtol=1e-5, atol=1e-5)


def test_decoding_from_memories_with_a_reset_row():
    """Row 0 reset at the last call: its masked old entries stay masked in the decoding cache."""
    model = small_model(use_compressed_mem=True, **RECURRENT)
    x = tokens(2, 48)
    _, memories, states = run_segments(model, x[:, :32], 16)
    _, memories, states = model(x[:, 32:40], xl_memories=memories, states=states, reset=torch.tensor([True, False]))
    assert memories.blocks_since_reset is not None  # row 0's old compressed entries are still held, masked
    decoder = CachedDecoder(model, memories, states)
    with torch.no_grad():
        got = decoder.append(x[:, 40:44])
    fresh_memories, fresh_states = model(x[:1, 32:40])[1:]
    with torch.no_grad():
        fresh = CachedDecoder(model, fresh_memories, fresh_states).append(x[:1, 40:44])
    torch.testing.assert_close(got[:1], fresh, rtol=1e-5, atol=1e-5)


def _greedy_by_recompute(model, prime, num_new):
    seq = prime
    for _ in range(num_new):
        logits, _, _ = run_segments(model, seq, 16)
        seq = torch.cat((seq, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    return seq[:, prime.shape[1]:]


@pytest.mark.parametrize("compressed", [False, True])
def test_greedy_cached_equals_greedy_full_recompute(compressed):
    model = small_model(use_compressed_mem=compressed, **RECURRENT)
    prime = tokens(2, 5)
    cached = model.generate(prime, 38, temperature=0)  # past block ends 8..32 and segment ends 16, 32
    assert cached.shape == (2, 33)
    torch.testing.assert_close(cached, _greedy_by_recompute(model, prime, 33), rtol=0, atol=0)
    torch.testing.assert_close(model.generate(prime, 38, temperature=0, use_cache=False), cached, rtol=0, atol=0)


def test_batch_rows_are_independent():
    model = small_model(use_compressed_mem=True, **RECURRENT)
    prime = tokens(3, 6)
    together = model.generate(prime, 30, temperature=0)
    for row in range(3):
        alone = model.generate(prime[row:row + 1], 30, temperature=0)
        torch.testing.assert_close(together[row:row + 1], alone, rtol=0, atol=0)


def test_sampling_filters_and_stream():
    model = small_model()
    prime = tokens(2, 4)
    greedy = model.generate(prime, 20, temperature=0)
    torch.testing.assert_close(model.generate(prime, 20, top_k=1, filter_thres=None), greedy, rtol=0, atol=0)
    torch.testing.assert_close(model.generate(prime, 20, top_p=1e-6), greedy, rtol=0, atol=0)
    streamed = torch.stack(list(model.stream(prime, 16, temperature=0)), dim=1)
    torch.testing.assert_close(streamed, greedy, rtol=0, atol=0)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = torch.stack(list(model.stream(prime, 16, generator=g1)), dim=1)
    b = torch.stack(list(model.stream(prime, 16, generator=g2)), dim=1)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_eos_token_ends_a_row():
    model = small_model()
    prime = tokens(2, 4)
    greedy = model.generate(prime, 24, temperature=0)
    eos = int(greedy[0, 3])
    out = model.generate(prime, 24, temperature=0, eos_token=eos)
    for row in range(2):
        hits = (greedy[row] == eos).nonzero()
        if len(hits) == 0:  # never emits it: the row is untouched
            torch.testing.assert_close(out[row], greedy[row], rtol=0, atol=0)
            continue
        first = int(hits[0])
        assert (out[row, first:] == eos).all()
        torch.testing.assert_close(out[row, :first], greedy[row, :first], rtol=0, atol=0)


def test_top_p_and_top_k_restrict_the_candidates():
    torch.manual_seed(0)
    logits = torch.randn(4, 64) * 3
    order = logits.argsort(dim=-1, descending=True)
    probs = logits.softmax(-1).gather(-1, order).cumsum(-1)
    for _ in range(50):
        nucleus = sample(logits, top_p=0.5)
        ranks = (order == nucleus[:, None]).float().argmax(-1)
        # a token is allowed when the tokens ranked above it cover less than top_p
        covered_before = torch.where(ranks > 0, probs.gather(-1, (ranks - 1).clamp(min=0)[:, None])[:, 0], 0.0)
        assert (covered_before < 0.5).all()
        top = sample(logits, top_k=3)
        assert ((order[:, :3] == top[:, None]).any(-1)).all()


def test_returned_memories_continue_the_sequence():
    model = small_model(use_compressed_mem=True)
    prime = tokens(1, 5)
    new, memories, states = model.generate(prime, 37, temperature=0, return_memories_and_states=True)
    full = torch.cat((prime, new), dim=1)
    _, expected_memories, expected_states = run_segments(model, full[:, :32], 16)
    torch.testing.assert_close(memories.keys_values(), expected_memories.keys_values(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(states[0], expected_states[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(length=4), r"length.*> prime length 4"),
    (dict(length=3), r"length.*> prime length 4"),
    (dict(length=10, temperature=-1.0), "temperature must be a number >= 0"),
    (dict(length=10, top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(length=10, top_p=1.5), r"top_p must be in \(0, 1\]"),
    (dict(length=10, top_k=0), rf"top_k must be an int in 1..{VOCAB}"),
    (dict(length=10, filter_thres=1.0), r"filter_thres must be in \[0, 1\)"),
    (dict(length=10, eos_token=VOCAB), "eos_token must be a token id"),
    (dict(length=10, compile=True), "compile=True compiles the CUDA-graph decoding step.*got device=cpu"),
    (dict(length=10, compile=True, use_cache=False), "compile=True .* cannot go with use_cache=False"),
])
def test_bad_sampling_arguments(kwargs, pattern):
    model = small_model()
    with pytest.raises(ValueError, match=pattern):
        model.generate(tokens(1, 4), **kwargs)
    with pytest.raises(ValueError, match=pattern):
        RecurrentTrainerWrapper(model).generate(tokens(1, 4), **kwargs)


def test_bad_decoder_arguments():
    model = small_model()
    with pytest.raises(ValueError, match="use_cuda_graph=True needs the model on a CUDA device, got device=cpu"):
        CachedDecoder(model, *model.prepare(1), use_cuda_graph=True)
    with pytest.raises(ValueError, match=r"compile=True .*got device=cpu.*use_cuda_graph=False"):
        CachedDecoder(model, *model.prepare(1), use_cuda_graph=False, compile=True)
    for call in (lambda: model.generate(tokens(1, 4), 10, compile="yes"),
                 lambda: CachedDecoder(model, *model.prepare(1), compile=1)):
        with pytest.raises(TypeError, match="compile must be a bool"):
            call()


def test_decoding_state_does_not_grow_with_the_generated_length():
    """GPU memory for generation is constant in the length: the cache is allocated once, and the
    memories stay at their capacity however many blocks pass."""
    model = small_model(use_compressed_mem=True, **RECURRENT)
    memories, states = model.prepare(1)
    decoder = CachedDecoder(model, memories, states)
    buffers = [decoder.cache.keys, decoder.cache.values, decoder.cache.block_kv]
    addresses = [t.data_ptr() for t in buffers]
    shapes = []
    with torch.no_grad():
        decoder.append(tokens(1, 3))
        for step, t in enumerate(tokens(1, 200)[0]):
            decoder.append(t.view(1, 1))
            if step in (60, 199):
                shapes.append((decoder.memories.xl.shape, decoder.memories.compressed.shape))
    assert [t.data_ptr() for t in buffers] == addresses
    assert shapes[0] == shapes[1] == ((3, 2, 1, 1, 8, 8), (3, 2, 1, 1, 4, 8))


@pytest.mark.parametrize("use_cache", [True, False])
def test_streaming_records_no_autograd_whatever_the_callers_grad_mode(use_cache):
    """Each step of ``stream`` runs without autograd although the caller iterates with grad on:
    otherwise the cache's in-place updates would chain one graph growing with every token."""
    model = small_model().train()
    steps = []
    forward_block = model.forward_block

    def spy(*args, **kwargs):
        out = forward_block(*args, **kwargs)
        steps.append((torch.is_grad_enabled(), out[0].grad_fn, [s.grad_fn for s in out[2]]))
        return out

    model.forward_block = spy
    for token in model.stream(tokens(2, 5), 20, use_cache=use_cache):
        assert torch.is_grad_enabled() and not token.requires_grad  # the caller's mode, restored at each yield
    assert len(steps) == 20  # the prefill, then one per fed-back token
    assert all(step == (False, None, [None]) for step in steps)


@pytest.mark.parametrize("temperature", [1e-46, 1e-40, 1e-37])
def test_a_vanishing_temperature_is_greedy(temperature):
    """logits / temperature would overflow to inf (softmax NaN, argmax of NaN token 0): the greedy token."""
    logits = torch.randn(3, VOCAB, generator=torch.Generator().manual_seed(0)) * 50
    logits[:, 0] = -100.0  # token 0 is never the greedy one
    for options in (dict(), dict(filter_thres=None), dict(top_p=0.9), dict(top_k=5)):
        assert torch.equal(sample(logits, temperature, **options), logits.argmax(dim=-1))
    model = small_model()
    prime = tokens(2, 5)
    assert torch.equal(model.generate(prime, 12, temperature=1e-40), model.generate(prime, 12, temperature=0))


def test_generate_takes_a_generator_and_stream_checks_it_at_the_call():
    model = small_model()
    prime = tokens(2, 5)

    def sampled(seed: int, use_cache: bool = True) -> torch.Tensor:
        return model.generate(prime, 30, generator=torch.Generator().manual_seed(seed), use_cache=use_cache)

    assert torch.equal(sampled(3), sampled(3)) and not torch.equal(sampled(3), sampled(4))
    assert torch.equal(sampled(3, use_cache=False), sampled(3))
    streamed = model.stream(prime, 25, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.stack(list(streamed), dim=1), sampled(3))
    assert torch.equal(RecurrentTrainerWrapper(model).generate(prime, 30, generator=torch.Generator().manual_seed(3)),
                       sampled(3))
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
        model.stream(prime, 5, generator=3)  # at the call, not at the first next()
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
        model.generate(prime, 10, generator=3)
    with pytest.raises(ValueError, match=r"generator is on cpu; it must be on the model's device type \(cuda\)"):
        check_sampling(VOCAB, generator=torch.Generator(), device=torch.device("cuda"))
