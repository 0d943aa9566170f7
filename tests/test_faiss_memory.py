"""The faiss kNN store (knn_backend="faiss"): retrieves exactly what the torch store does, evicts
FIFO a shard at a time (never wholesale), leaves no file behind; clear errors where it cannot serve."""

from __future__ import annotations

import gc
import math

import pytest
import torch

pytest.importorskip("faiss")
pytest.importorskip("memorizing_transformers_pytorch")

from block_recurrent_transformer_pytorch import BlockRecurrentConfig, RecurrentTrainerWrapper  # noqa: E402
from block_recurrent_transformer_pytorch import faiss_memory  # noqa: E402
from block_recurrent_transformer_pytorch.faiss_memory import FaissKNNMemory, FaissStore  # noqa: E402
from block_recurrent_transformer_pytorch.generation import CachedDecoder  # noqa: E402
from block_recurrent_transformer_pytorch.knn_memory import KNNMemory, recall  # noqa: E402

from .helpers import VOCAB, decode_each_step, run_segments, small_model, tokens  # noqa: E402

KNN = dict(knn_layers=(3,), knn_memory_size=24, knn_top_k=4)
BLOCK, CAPACITY, SHARD = 8, 24, 16  # shards of two blocks, so a shard is often partly past the capacity


@pytest.fixture
def two_block_shards(monkeypatch):
    """Models' faiss stores get shards of two blocks (the default, a few per store, is one block at this size)."""
    monkeypatch.setattr(faiss_memory, "SHARDS", CAPACITY // SHARD)


def _stores(layers: int = 2, batch: int = 2, kv_heads: int = 2, d: int = 8) -> tuple[KNNMemory, FaissKNNMemory]:
    torch_store = KNNMemory.empty(layers, batch, kv_heads, d, CAPACITY)
    faiss_store = FaissKNNMemory(FaissStore(layers, batch, kv_heads, d, CAPACITY, SHARD), 0, (0,) * batch)
    return torch_store, faiss_store


def test_faiss_store_agrees_with_the_torch_store():
    """Same writes (12 blocks: the capacity wraps 4 times), a reset of row 0 and its pre-reset block
    written invalid, same queries: the same entries found, the same recall output."""
    torch.manual_seed(0)
    torch_store, faiss_store = _stores()
    for step in range(12):
        k, v = torch.randn(2, 2, 2, BLOCK, 8), torch.randn(2, 2, 2, BLOCK, 8)
        rows_valid = None
        if step == 5:
            reset = torch.tensor([True, False])
            torch_store, faiss_store = torch_store.reset(reset), faiss_store.reset(reset)
            rows_valid = ~reset
        torch_store, faiss_store = torch_store.write(k, v, rows_valid), faiss_store.write(k, v, rows_valid)
        q = torch.randn(2, 2, 6, 8)
        for layer in range(2):
            expected_keys, expected_values, expected_found = torch_store.retrieve(q, layer, 10)
            keys, values, found = faiss_store.retrieve(q, layer, 10)
            assert torch.equal(found, expected_found)
            mask = found[..., None]
            torch.testing.assert_close(keys * mask, expected_keys * mask, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(values * mask, expected_values * mask, rtol=1e-5, atol=1e-5)
            query = torch.randn(2, 4, 3, 8)  # 4 query heads over 2 key/value heads
            for a, b in zip(recall(query, faiss_store, layer, 10, 8.0), recall(query, torch_store, layer, 10, 8.0)):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        if step == 5:  # row 0 has nothing of its new document yet
            assert not found[0].any() and found[1].all()


def test_eviction_is_fifo_a_shard_at_a_time_never_wholesale():
    """Retrieval sees exactly the newest CAPACITY entries; storage holds whole shards: the one being
    written and the two before it (ceil(CAPACITY / SHARD) + 1 = 3 shards), so the oldest entries
    go a shard (2 blocks) at a time, and no index of memorizing-transformers ever fills (it would wipe)."""
    _, view = _stores(layers=1, batch=1, kv_heads=1)
    store = view.store
    query = torch.zeros(1, 1, 1, 8)
    for block in range(20):
        values = torch.full((1, 1, 1, BLOCK, 8), float(block))  # the block's number, to read back
        view = view.write(torch.randn(1, 1, 1, BLOCK, 8), values)
        written = (block + 1) * BLOCK
        _, found_values, found = view.retrieve(query, 0, CAPACITY)
        blocks = set(found_values[found][:, 0].long().tolist())
        assert blocks == set(range(max(0, block + 1 - CAPACITY // BLOCK), block + 1))
        assert int(found.sum()) == min(written, CAPACITY)  # never fewer: no wholesale wipe
        current_shard = (written - 1) // SHARD
        assert store.oldest == max(0, (current_shard - 2) * SHARD)
        for shards in store.shards:
            for shard in shards:
                if shard is not None:
                    assert all(knn.index.ntotal <= SHARD and len(knn.ids) <= SHARD for knn in shard.knns)


def test_no_files_left_behind(tmp_path, monkeypatch, two_block_shards):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the store's temporary directory goes here
    monkeypatch.chdir(tmp_path)  # memorizing-transformers' default memmap directory is relative
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR

    model = small_model(knn_backend="faiss", **KNN)
    _, memories, _ = run_segments(model, tokens(2, 128), 16)  # 16 blocks: the ring reused many times
    store = memories.knn.store
    files = list(store.directory.iterdir())
    assert 0 < len(files) <= store.num_shards  # one memmap per shard of the one kNN layer, reused
    memories.knn.close()
    assert not store.directory.exists()

    _, memories, _ = run_segments(model, tokens(2, 64), 16)
    directory = memories.knn.store.directory
    assert directory.exists()
    del memories, store
    gc.collect()
    assert not directory.exists()
    assert list(tmp_path.iterdir()) == []  # nothing else either (no ./.tmp/knn.memories)


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_faiss_model_equals_torch_model(kv_heads, two_block_shards):
    """Same weights, fp32, 12 segments (23 blocks through a store of 3: it wraps 7 times), row 0 reset at segment 4."""
    torch_model = small_model(kv_heads=kv_heads, **KNN)
    faiss_model = small_model(kv_heads=kv_heads, knn_backend="faiss", **KNN)
    faiss_model.load_state_dict(torch_model.state_dict())
    x, resets = tokens(2, 192), {4: torch.tensor([True, False])}
    expected, _, _ = run_segments(torch_model, x, 16, resets=resets)
    got, _, _ = run_segments(faiss_model, x, 16, resets=resets)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_decoding_with_faiss_equals_the_full_forward(two_block_shards):
    model = small_model(knn_backend="faiss", **KNN)
    x = tokens(2, 56)
    expected, _, _ = run_segments(model, x, 16)
    got = decode_each_step(CachedDecoder(model, *model.prepare(2)), x, prefill=5)
    torch.testing.assert_close(got, expected[:, 4:], rtol=1e-5, atol=1e-5)


def test_activation_checkpointing_gradients_equal_torch_backend(two_block_shards):
    """Checkpointing recomputes each block after the call's later blocks were written: a view still
    sees its own store, and the recomputed write is recognised as the same block."""
    grads = []
    for backend in ("torch", "faiss"):
        model = small_model(knn_backend=backend, activation_checkpointing=True, **KNN).train()
        _, memories, states = run_segments(model, tokens(2, 48), 16)  # the store is full
        loss, _, _ = model(tokens(2, 17, seed=3), return_loss=True, xl_memories=memories, states=states)
        loss.backward()
        grads.append([p.grad for p in model.parameters()])
    assert grads[1][0] is not None
    for expected, got in zip(*grads):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_wrapper_with_activation_checkpointing_takes_one_segment_per_call():
    """The backward recomputes the first segment after the later ones wrote to the store, past its
    slack: several segments are refused up front; one per call, memories carried, equals torch's."""
    models = [small_model(knn_backend=backend, activation_checkpointing=True, **KNN).train()
              for backend in ("torch", "faiss")]
    wrappers = [RecurrentTrainerWrapper(model) for model in models]
    x = tokens(2, 81)
    with pytest.raises(ValueError, match=r'activation_checkpointing with knn_backend="faiss" takes one segment '
                                         r"per wrapper call, got 5"):
        wrappers[1](x)
    with torch.no_grad():  # nothing to recompute
        wrappers[1](x)
    for wrapper in wrappers:
        memories = states = None
        for start in range(0, 80, 16):
            loss, memories, states = wrapper(x[:, start:start + 17], return_memories_and_states=True,
                                             xl_memories=memories, states=states)
            loss.backward()
    for expected, got in zip(*(model.parameters() for model in models)):
        torch.testing.assert_close(got.grad, expected.grad, rtol=1e-5, atol=1e-6)


def test_old_memories_are_read_but_not_branched():
    """The store is one timeline: memories from before a later write still read their own entries
    (a partial block commits nothing), but continuing them with other tokens is refused."""
    torch_model, faiss_model = small_model(**KNN), small_model(knn_backend="faiss", **KNN)
    x = tokens(2, 48)
    _, old, states = run_segments(faiss_model, x[:, :32], 16)
    _, torch_old, torch_states = run_segments(torch_model, x[:, :32], 16)
    faiss_model(x[:, 32:], xl_memories=old, states=states)  # the store moves on
    got, _, _ = faiss_model(x[:, 32:36], xl_memories=old, states=states)
    expected, _, _ = torch_model(x[:, 32:36], xl_memories=torch_old, states=torch_states)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="holds one timeline"):
        faiss_model((x[:, 32:] + 1) % VOCAB, xl_memories=old, states=states)


def test_too_old_memories_are_refused(two_block_shards):
    model = small_model(knn_backend="faiss", **KNN)
    x = tokens(1, 160)
    _, old, states = run_segments(model, x[:, :32], 16)
    run_segments(model, x[:, 32:], 16, old, states)  # 16 blocks later its entries are evicted
    with pytest.raises(RuntimeError, match="too old"):
        model(x[:, :4], xl_memories=old, states=states)


def test_compiling_is_refused():
    # dynamo counts compilations of the model's forward across tests; past its limit it refuses with
    # its own message, so this test starts from a clean cache whatever ran before it
    torch._dynamo.reset()
    model = small_model(knn_backend="faiss", **KNN)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with pytest.raises(Exception, match='knn_backend="faiss" runs eagerly only'):
        compiled(tokens(1, 16))


def test_cuda_graph_decoding_is_refused():
    model = small_model(knn_backend="faiss", **KNN)
    with pytest.raises(ValueError, match="use_cuda_graph=True cannot serve a model with knn_layers"):
        CachedDecoder(model, *model.prepare(1), use_cuda_graph=True)


@pytest.mark.parametrize("overrides, error, pattern", [
    (dict(knn_backend="gpu"), TypeError, "knn_backend"),
    (dict(knn_backend="faiss", knn_retrieval="routed"), ValueError,
     'knn_backend="faiss" supports knn_retrieval="exact" only, got knn_retrieval=\'routed\''),
    (dict(knn_backend="faiss", knn_retrieval="query_routed"), ValueError,
     'knn_backend="faiss" supports knn_retrieval="exact" only, got knn_retrieval=\'query_routed\''),
])
def test_bad_backend_arguments(overrides, error, pattern):
    with pytest.raises(error, match=pattern):
        BlockRecurrentConfig(num_tokens=VOCAB, dim=32, depth=3, dim_head=8, heads=4, max_seq_len=16, block_width=8,
                             **KNN, **overrides)


def test_missing_faiss_names_the_install_command(monkeypatch):
    monkeypatch.setattr(faiss_memory, "IMPORT_ERROR", ImportError("No module named 'faiss'"))
    with pytest.raises(ImportError, match=r'pip install "block-recurrent-transformer-pytorch\[faiss\]"'):
        small_model(knn_backend="faiss", **KNN)


def test_memories_of_the_other_backend_are_rejected():
    torch_model, faiss_model = small_model(**KNN), small_model(knn_backend="faiss", **KNN)
    _, torch_memories, _ = torch_model(tokens(1, 16))
    _, faiss_memories, _ = faiss_model(tokens(1, 16))
    with pytest.raises(ValueError, match="holds a torch kNN store, but the model has knn_backend='faiss'"):
        faiss_model(tokens(1, 8), xl_memories=torch_memories)
    with pytest.raises(ValueError, match="holds a faiss kNN store, but the model has knn_backend='torch'"):
        torch_model(tokens(1, 8), xl_memories=faiss_memories)
    with pytest.raises(ValueError, match="batch"):
        faiss_model(tokens(2, 8), xl_memories=faiss_memories)
    faiss_memories.knn.close()
    with pytest.raises(RuntimeError, match="closed"):
        faiss_model(tokens(1, 8), xl_memories=faiss_memories)


def test_default_shards():
    assert faiss_memory.default_shard_size(262144, 512) == 32768
    store = faiss_memory.empty_faiss_memory(
        BlockRecurrentConfig(num_tokens=VOCAB, dim=32, depth=1, dim_head=8, heads=1, max_seq_len=1024, block_width=512,
                             knn_layers=(1,), knn_memory_size=262144, knn_backend="faiss"), batch=1).store
    assert store.num_shards == math.ceil((262144 + 1024) / 32768) + 1  # one shard + a call's blocks beyond capacity
