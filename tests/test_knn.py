"""kNN memory: a FIFO store of past keys/values, searched exactly, reaching beyond the XL memory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from block_recurrent_transformer_pytorch import BlockRecurrentTransformer
from block_recurrent_transformer_pytorch.generation import CachedDecoder, ReferenceDecoder
from block_recurrent_transformer_pytorch.attention import attention_with_logsumexp
from block_recurrent_transformer_pytorch.knn_memory import KNNMemory, grouped_top_k, joint_softmax, recall, search

from .helpers import VOCAB, decode_each_step, run_segments, small_model, tokens

KNN = dict(knn_layers=(3,), knn_memory_size=24, knn_top_k=4)


def _empty(capacity: int, batch: int = 2, d: int = 8) -> KNNMemory:
    zeros = torch.zeros(1, batch, 1, capacity, d)
    return KNNMemory(zeros, zeros.clone(), torch.zeros(batch, capacity, dtype=torch.bool), torch.tensor(0))


def test_fifo_keeps_the_newest_entries_and_evicts_the_oldest():
    store = _empty(capacity=4)
    blocks = [torch.randn(1, 2, 1, 2, 8) for _ in range(3)]  # (knn layers, b, kv_heads, n, d)
    for block in blocks:
        store = store.write(block, block)
    # capacity 4 = two blocks of 2: block 0 was overwritten by block 2 at slots 0-1, block 1 sits at 2-3
    expected = torch.cat((blocks[2], blocks[1]), dim=-2)
    torch.testing.assert_close(store.values, expected)
    torch.testing.assert_close(store.keys, F.normalize(expected, dim=-1))
    assert store.valid.all() and int(store.head) == 2


def test_a_search_scores_only_written_slots_and_finds_the_same():
    """The store counts the entries written until the ring wraps; retrieval then scores only those
    slots (at least top_k), with the result of scoring every slot."""
    torch.manual_seed(0)
    zeros = torch.zeros(1, 2, 1, 64, 8)
    counted = KNNMemory(zeros, zeros.clone(), torch.zeros(2, 64, dtype=torch.bool), torch.tensor(0), written=0)
    unknown = KNNMemory(zeros, zeros.clone(), torch.zeros(2, 64, dtype=torch.bool), torch.tensor(0))
    q = torch.randn(2, 1, 5, 8)
    for block in range(10):  # the ring wraps at block 8
        k, v = torch.randn(1, 2, 1, 8, 8), torch.randn(1, 2, 1, 8, 8)
        counted, unknown = counted.write(k, v), unknown.write(k, v)
        assert counted.written == min(8 * (block + 1), 64) and unknown.written is None
        assert counted.searched(top_k=4) == max(counted.written, 4) and unknown.searched(top_k=4) == 64
        for got, want in zip(counted.retrieve(q, 0, 4), unknown.retrieve(q, 0, 4)):
            assert torch.equal(got, want)


def test_search_is_exact_against_brute_force():
    torch.manual_seed(0)
    q, keys = torch.randn(2, 1, 5, 8), torch.randn(2, 1, 100, 8)
    valid = torch.rand(2, 100) > 0.3
    index, found = search(q, keys, valid, top_k=7, chunk=16)
    scores = (q @ keys.transpose(-1, -2)).masked_fill(~valid[:, None, None], float("-inf"))
    expected = scores.topk(7, dim=-1)
    torch.testing.assert_close(scores.gather(-1, index), expected.values)
    assert found.all()
    assert valid.gather(-1, index.reshape(2, -1)).all()


@pytest.mark.parametrize("layout", ["random", "best_in_one_group", "masked"])
def test_grouped_top_k_equals_topk(layout):
    """Group maxima, then the best groups' entries: the same top k as torch.topk, wherever the best
    scores sit (spread out, or all k in one group) and with -inf (invalid) entries."""
    torch.manual_seed(0)
    scores = torch.randn(3, 4, 1024)
    if layout == "best_in_one_group":
        scores[..., 320:327] += 10.0
    if layout == "masked":
        scores = scores.masked_fill(torch.rand(3, 4, 1024) > 0.02, float("-inf"))  # ~20 valid per row
    values, index = grouped_top_k(scores, 7, group=16)
    expected = scores.topk(7, dim=-1)
    torch.testing.assert_close(values, expected.values)
    torch.testing.assert_close(scores.gather(-1, index), expected.values)
    if layout != "masked":  # no ties: the same entries in the same order
        assert torch.equal(index, expected.indices)


def test_a_grouped_search_is_exact_against_brute_force():
    torch.manual_seed(0)
    q, keys = torch.randn(2, 2, 5, 8), torch.randn(2, 2, 2048, 8)
    valid = torch.rand(2, 2048) > 0.5
    index, _ = search(q, keys, valid, top_k=4, chunk=512)  # chunks long enough for grouped_top_k
    scores = (q @ keys.transpose(-1, -2)).masked_fill(~valid[:, None, None], float("-inf"))
    torch.testing.assert_close(scores.gather(-1, index), scores.topk(4, dim=-1).values)


def test_reset_rows_find_nothing_and_keep_their_local_output():
    store = _empty(capacity=4).write(torch.randn(1, 2, 1, 4, 8), torch.randn(1, 2, 1, 4, 8))
    store = store.reset(torch.tensor([True, False]))
    q = torch.randn(2, 2, 3, 8, requires_grad=True)
    memory, memory_lse = recall(q, store, 0, top_k=2, scale=8.0)
    local = torch.randn(2, 2, 3, 8)
    mixed = joint_softmax(local, torch.randn(2, 2, 3, 1), memory, memory_lse)
    assert torch.equal(mixed[0], local[0]) and not torch.allclose(mixed[1], local[1])
    mixed.sum().backward()  # the row with no entry: a zero gradient, not NaN
    assert torch.equal(q.grad[0], torch.zeros_like(q.grad[0])) and q.grad[1].abs().sum() > 0


def test_joint_softmax_equals_one_softmax_over_local_keys_and_retrieved_entries():
    """Local attention (causal, over memories + the block) and attention over each query's own
    retrieved entries, merged by their logsumexps == softmax over all the keys at once."""
    torch.manual_seed(0)
    b, h, n, m, k, d, scale = 2, 4, 5, 9, 3, 8, 8.0
    q, keys, values = torch.randn(b, h, n, d), torch.randn(b, 1, m, d), torch.randn(b, 1, m, d)
    top_keys, top_values = torch.randn(b, h, n, k, d), torch.randn(b, h, n, k, d)
    found = torch.rand(b, h, n, k) > 0.3
    local, local_lse = attention_with_logsumexp(q, keys, values, causal=True, scale=scale)
    memory_scores = torch.einsum("bhnd,bhnkd->bhnk", q, top_keys) * scale
    memory_weights = memory_scores.masked_fill(~found, float("-inf")).softmax(-1).nan_to_num(0.0)
    memory = torch.einsum("bhnk,bhnkd->bhnd", memory_weights, top_values)
    memory_lse = memory_scores.masked_fill(~found, torch.finfo(torch.float32).min).logsumexp(-1, keepdim=True)
    got = joint_softmax(local, local_lse, memory, memory_lse)

    # query i of n sees keys 0..m-n+i (lower-right causal)
    local_scores = (q @ keys.transpose(-1, -2) * scale).masked_fill(
        ~torch.ones(n, m, dtype=torch.bool).tril(m - n), float("-inf"))

    joint = torch.cat((local_scores, memory_scores.masked_fill(~found, float("-inf"))), dim=-1).softmax(-1)
    expected = joint[..., :m] @ values + torch.einsum("bhnk,bhnkd->bhnd", joint[..., m:], top_values)
    torch.testing.assert_close(got, expected)


def _changed_first_block(x):
    changed = x.clone()
    changed[:, :8] = (changed[:, :8] + 1) % VOCAB
    return changed


RETRIEVALS = pytest.mark.parametrize("retrieval", ["exact", "routed"])


@RETRIEVALS
@pytest.mark.parametrize("knn_layers, reaches", [((1,), True), ((), False)])
def test_knn_memory_reaches_beyond_the_xl_memory(knn_layers, reaches, retrieval):
    """No recurrence, depth 1: block 5 sees block 4 through the XL memory and block 1 only through the store."""
    model = small_model(depth=1, recurrent_layers=(), knn_layers=knn_layers, knn_memory_size=24, knn_top_k=4,
                        knn_retrieval=retrieval)
    x = tokens(1, 48)
    late = run_segments(model, x, 16)[0][:, 32:40]
    late_changed = run_segments(model, _changed_first_block(x), 16)[0][:, 32:40]
    assert (not torch.allclose(late, late_changed)) == reaches


@RETRIEVALS
def test_causality_with_knn_layers(retrieval):
    model = small_model(max_seq_len=32, knn_retrieval=retrieval, **KNN)
    x = tokens(1, 64)
    reference, _, _ = run_segments(model, x, 32)
    for t in (7, 20, 40):
        changed = x.clone()
        changed[:, t + 1:] = (changed[:, t + 1:] + 1) % VOCAB
        torch.testing.assert_close(run_segments(model, changed, 32)[0][:, :t + 1], reference[:, :t + 1], rtol=0, atol=0)


@RETRIEVALS
def test_whole_run_equals_segment_by_segment_with_knn(retrieval):
    whole = small_model(max_seq_len=64, use_compressed_mem=True, knn_retrieval=retrieval, **KNN)
    chunked = small_model(max_seq_len=16, use_compressed_mem=True, knn_retrieval=retrieval, **KNN)
    chunked.load_state_dict(whole.state_dict())
    x = tokens(2, 64)
    torch.testing.assert_close(run_segments(chunked, x, 16)[0], whole(x)[0], rtol=1e-5, atol=1e-5)


@RETRIEVALS
@pytest.mark.parametrize("kv_heads", [1, 2])
@pytest.mark.parametrize("decoder_cls", [CachedDecoder, ReferenceDecoder])
def test_decoding_with_knn_equals_the_full_forward(decoder_cls, kv_heads, retrieval):
    model = small_model(kv_heads=kv_heads, knn_retrieval=retrieval, **KNN)
    x = tokens(2, 56)
    expected, _, _ = run_segments(model, x, 16)
    got = decode_each_step(decoder_cls(model, *model.prepare(2)), x, prefill=5)
    torch.testing.assert_close(got, expected[:, 4:], rtol=1e-5, atol=1e-5)


@RETRIEVALS
def test_bf16_autocast_runs_and_stays_close_to_fp32(retrieval):
    """The joint softmax mixes bf16 attention outputs with fp32 normalisers: under autocast the
    forward and backward run (no dtype mismatch), gradients are finite and the loss is fp32's
    up to bf16 rounding."""
    model = small_model(knn_retrieval=retrieval, kv_heads=2, **KNN).train()
    _, memories, states = run_segments(model, tokens(2, 32), 16)
    x = tokens(2, 17, seed=3)
    expected, _, _ = model(x, return_loss=True, xl_memories=memories, states=states)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _, _ = model(x, return_loss=True, xl_memories=memories, states=states)
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    torch.testing.assert_close(loss.float(), expected, rtol=2e-2, atol=2e-2)


@RETRIEVALS
def test_gradients_reach_the_knn_queries_and_router(retrieval):
    model = small_model(knn_retrieval=retrieval, **KNN).train()
    _, memories, states = run_segments(model, tokens(2, 32), 16)
    loss, _, _ = model(tokens(2, 17, seed=3), return_loss=True, xl_memories=memories, states=states)
    loss.backward()
    block = model.layers[2][0]
    assert block.attend.qk_norm.q_gain.grad.abs().sum() > 0
    if retrieval == "routed":
        assert block.router.routing_token.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-5), (torch.bfloat16, 0.1)])
def test_routed_retrieval_runs_in_the_models_dtype(dtype, tolerance):
    """The router's weights follow the model's dtype (.double(), .bfloat16()): it is fed keys in
    that dtype, and gives fp32's logits up to the dtype's rounding, with gradients to the router."""
    x = tokens(2, 48)
    expected, _, _ = run_segments(small_model(knn_retrieval="routed", **KNN), x, 16)
    model = small_model(knn_retrieval="routed", **KNN).to(dtype).train()
    got, memories, states = run_segments(model, x, 16)
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), expected, rtol=tolerance, atol=tolerance)
    loss, _, _ = model(tokens(2, 17, seed=3), return_loss=True, xl_memories=memories, states=states)
    loss.backward()
    assert model.layers[2][0].router.routing_token.grad.abs().sum() > 0


@pytest.mark.parametrize("overrides, pattern", [
    (dict(knn_layers=(4,)), r"knn_layers must lie in 1..depth=3"),
    (dict(knn_layers=(1, 1)), "knn_layers must not repeat"),
    (dict(knn_layers=(1,), knn_memory_size=20), r"knn_memory_size \(20\) must be a multiple of block_width \(8\)"),
    (dict(knn_layers=(1,), knn_memory_size=8, knn_top_k=9), r"knn_top_k \(9\) cannot exceed knn_memory_size \(8\)"),
    (dict(knn_layers=(1,), knn_memory_size=0), "knn_memory_size must be a positive int"),
    (dict(knn_layers=(1,), knn_retrieval="faiss"), "knn_retrieval"),
])
def test_bad_knn_arguments(overrides, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        BlockRecurrentTransformer(num_tokens=VOCAB, dim=32, depth=3, dim_head=8, heads=4, max_seq_len=16,
                                  block_width=8, **overrides)


def test_memories_without_the_store_are_rejected():
    plain = small_model()
    with_knn = small_model(**KNN)
    _, memories, _ = plain(tokens(1, 16))
    with pytest.raises(ValueError, match="lacks a kNN store"):
        with_knn(tokens(1, 8), xl_memories=memories)
    _, knn_memories, _ = with_knn(tokens(1, 16))
    with pytest.raises(ValueError, match="batch=2"):
        with_knn(tokens(2, 8), xl_memories=knn_memories)


def test_reset_rows_do_not_recall_their_old_document():
    """Row 0 starts a new document at segment 3 of 6: its later logits equal a fresh run's, so
    nothing of the old document (not even the block the XL memory held at the reset) is recalled."""
    model = small_model(recurrent_layers=(), use_compressed_mem=True, **KNN)
    x = tokens(2, 96)
    got, _, _ = run_segments(model, x, 16, resets={2: torch.tensor([True, False])})
    fresh, _, _ = run_segments(model, x[:1, 32:], 16)
    torch.testing.assert_close(got[:1, 32:], fresh, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1:], run_segments(model, x[1:], 16)[0], rtol=1e-5, atol=1e-5)


def test_search_with_top_k_larger_than_a_chunk():
    torch.manual_seed(1)
    q, keys = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 40, 8)
    valid = torch.ones(1, 40, dtype=torch.bool)
    index, _ = search(q, keys, valid, top_k=7, chunk=3)
    scores = q @ keys.transpose(-1, -2)
    torch.testing.assert_close(scores.gather(-1, index), scores.topk(7, dim=-1).values)


def test_cuda_graph_refused_with_knn_layers():
    model = small_model(**KNN)
    with pytest.raises(ValueError, match="use_cuda_graph=True cannot serve a model with knn_layers"):
        CachedDecoder(model, *model.prepare(1), use_cuda_graph=True)


def test_compiles_without_graph_breaks_with_knn():
    model = small_model(**KNN)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = tokens(2, 48)
    memories = states = reference_memories = reference_states = None
    for segment in x.split(16, dim=1):
        got, memories, states = compiled(segment, xl_memories=memories, states=states)
        expected, reference_memories, reference_states = model(segment, xl_memories=reference_memories,
                                                               states=reference_states)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
