"""Small models and inputs shared by the tests."""

from __future__ import annotations

import random
from typing import Optional

import torch
import torch.nn.functional as F

from block_recurrent_transformer_pytorch import BlockRecurrentTransformer

VOCAB = 64


def small_model(seed: int = 0, **overrides) -> BlockRecurrentTransformer:
    """A tiny fp32 model whose every component is live: 3 layers, blocks of 8, 6 state vectors."""
    torch.manual_seed(seed)
    kwargs = dict(num_tokens=VOCAB, dim=32, depth=3, dim_head=8, heads=4, max_seq_len=16, block_width=8,
                  num_state_vectors=6, recurrent_layers=(2,))
    kwargs.update(overrides)
    return BlockRecurrentTransformer(**kwargs).eval()


def tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, length), generator=g)


def run_segments(model: BlockRecurrentTransformer, x: torch.Tensor, seg: int, memories=None, states=None,
                 resets: Optional[dict[int, torch.Tensor]] = None):
    """Logits of x run segment by segment, memories and states carried; also the final ones.
    resets: segment number -> the bool (batch,) ``reset`` passed with that segment."""
    outs = []
    for i, chunk in enumerate(x.split(seg, dim=1)):
        reset = None if resets is None else resets.get(i)
        logits, memories, states = model(chunk, xl_memories=memories, states=states, reset=reset)
        outs.append(logits)
    return torch.cat(outs, dim=1), memories, states


def assert_causal(model: BlockRecurrentTransformer, x: torch.Tensor, seg: int) -> None:
    """Run segment by segment, each position's logits depend on the tokens up to it alone: changing every
    token after t, within a block, at a block's end or a segment's, leaves the logits up to t exactly as
    they were and changes those after it."""
    reference, _, _ = run_segments(model, x, seg)
    for t in (0, 7, 8, 20, 31, 32, 45):
        changed = x.clone()
        changed[:, t + 1:] = (changed[:, t + 1:] + 1) % VOCAB
        logits, _, _ = run_segments(model, changed, seg)
        torch.testing.assert_close(logits[:, :t + 1], reference[:, :t + 1], rtol=0, atol=0)
        assert not torch.allclose(logits[:, t + 1:], reference[:, t + 1:])


def assert_projected_memories_equal_cached(cached: BlockRecurrentTransformer,
                                           projected: BlockRecurrentTransformer) -> None:
    """projected (memory_kv_from_inputs=True), given cached's weights, computes cached's logits and memories'
    keys/values over four segments of 16 tokens, rows reset at different segments."""
    projected.load_state_dict(cached.state_dict())
    x = tokens(2, 64)
    resets = {1: torch.tensor([True, False]), 2: torch.tensor([False, True])}
    want, want_mem, _ = run_segments(cached, x, 16, resets=resets)
    got, mem, _ = run_segments(projected, x, 16, resets=resets)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mem.keys_values(), want_mem.keys_values(), rtol=1e-5, atol=1e-5)


def assert_whole_run_equals_segments(whole: BlockRecurrentTransformer, chunked: BlockRecurrentTransformer) -> None:
    """chunked (segments of 16 tokens), given the weights of whole (one segment of 64), computes whole's logits,
    memories and states over 64 tokens run segment by segment, memories and states carried."""
    chunked.load_state_dict(whole.state_dict())
    x = tokens(2, 64)
    expected, want_mem, want_states = whole(x)
    got, mem, states = run_segments(chunked, x, 16)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mem.keys_values(), want_mem.keys_values(), rtol=1e-5, atol=1e-5)
    for a, b in zip(states, want_states, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def assert_starts_as_the_model_without(model: BlockRecurrentTransformer, without: BlockRecurrentTransformer,
                                       added: set[str]) -> None:
    """model (an option on, at one seed) is ``without`` (the option off, the same seed) with the parameters
    ``added`` and nothing else: every other weight at its draw, and exactly the same logits, memories and
    states over three segments of 16 tokens, one row reset at the second."""
    assert set(model.state_dict()) - set(without.state_dict()) == added
    for name, weight in without.state_dict().items():
        assert torch.equal(model.state_dict()[name], weight), name
    x = tokens(2, 48)
    resets = {1: torch.tensor([True, False])}
    want, want_mem, want_states = run_segments(without, x, 16, resets=resets)
    got, mem, states = run_segments(model, x, 16, resets=resets)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(mem.keys_values(), want_mem.keys_values(), rtol=0, atol=0)
    for a, b in zip(states, want_states, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def assert_train_step_equals_wrapper_backward(model: BlockRecurrentTransformer) -> list[torch.Tensor]:
    """TrainStep (eager, fp32) over 5 segments of 16 tokens gives the loss and gradients of
    (wrapper(x) * 0.25).backward(), memory and state dropout 0.4 (the same Python draws); returns those
    gradients (zeros where a parameter got none). The model's gradients are left as TrainStep made them."""
    from block_recurrent_transformer_pytorch import RecurrentTrainerWrapper, TrainStep

    wrapper = RecurrentTrainerWrapper(model, xl_memories_dropout=0.4, state_dropout=0.4)
    x = tokens(2, 5 * 16 + 1)
    model.zero_grad(set_to_none=True)
    random.seed(3)
    reference_loss = wrapper(x)
    (reference_loss * 0.25).backward()
    reference = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    random.seed(3)
    loss = TrainStep(wrapper, cuda_graph=False, amp_dtype=None)(x, loss_scale=0.25)
    torch.testing.assert_close(loss, reference_loss.detach(), rtol=1e-6, atol=1e-6)
    for p, want in zip(model.parameters(), reference):
        torch.testing.assert_close(torch.zeros_like(p) if p.grad is None else p.grad, want, rtol=1e-5, atol=1e-7)
    return reference


def decode_each_step(decoder, x: torch.Tensor, prefill: int) -> torch.Tensor:
    """Logits after x[:, :prefill] and then after every later token, fed one at a time: (b, n - prefill + 1, vocab)."""
    with torch.no_grad():
        got = [decoder.append(x[:, :prefill])] + [decoder.append(x[:, t:t + 1]) for t in range(prefill, x.shape[1])]
    return torch.stack(got, dim=1)


def assert_decoding_equals_the_full_forward(model: BlockRecurrentTransformer, decoder_cls: type,
                                            prefill: int) -> None:
    """A decoder of decoder_cls over 44 tokens (blocks of 8, segments of 16: five block boundaries and two
    segment boundaries), fed x[:, :prefill] and then one token at a time, gives at every step the logits
    the model gives run segment by segment."""
    x = tokens(2, 44)
    expected, _, _ = run_segments(model, x, 16)
    got = decode_each_step(decoder_cls(model, *model.prepare(2)), x, prefill)
    torch.testing.assert_close(got, expected[:, prefill - 1:], rtol=1e-5, atol=1e-5)


# Layouts of a store a search runs over (``search_case``): which slots each row reaches.
SEARCH_PATTERNS = ("full", "partly_filled", "resets", "fewer_than_top_k")


def search_case(pattern: str, batch: int, queries: int, capacity: int, top_k: int, dtype: torch.dtype,
                device: str, dim: int = 64, key_dtype: Optional[torch.dtype] = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list]:
    """A search as KNNMemory.retrieve makes it: (q (batch, 1, queries, dim) in ``dtype``, keys (batch,
    1, searched, dim) random unit keys in ``key_dtype`` (default: dtype), reachable (batch, searched),
    ranges_to_mask) over a view of a ring of
    ``capacity`` + capacity/128 slots (capacity a multiple of 2,048) that is
    full: wrapped, no reset (the slack alone unreachable); partly_filled: a quarter of capacity
    written (no slot masked); resets: full, row 1 reset mid-window, row 2 just reset (reaching
    nothing); fewer_than_top_k: full, every other row reset top_k/2 entries ago."""
    from block_recurrent_transformer_pytorch.knn_memory import KNNMemory

    slots = capacity + capacity // 128
    position = capacity // 4 if pattern == "partly_filled" else 3 * slots + capacity // 2
    starts = [0] * batch
    if pattern == "resets":
        starts[1], starts[2] = position - capacity // 3 - 7, position
    if pattern == "fewer_than_top_k":
        starts[::2] = [position - top_k // 2] * len(starts[::2])
    keys = F.normalize(torch.randn(1, batch, 1, slots, dim, device=device), dim=-1).to(key_dtype or dtype)
    store = KNNMemory(keys, keys, torch.tensor(position, device=device), torch.tensor(starts, device=device),
                      capacity, slots, position, max(starts))
    searched = store.searched(top_k)
    q = torch.randn(batch, 1, queries, dim, device=device).to(dtype)
    return q, keys[0, ..., :searched, :], store.reachable(searched), store.ranges_to_mask(searched)


def assert_search_matches_reference(q: torch.Tensor, keys: torch.Tensor, reachable: torch.Tensor, top_k: int,
                                    index: torch.Tensor, found: torch.Tensor, tolerance: float,
                                    expected: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> None:
    """A search's (index, found) against reference_search's, or ``expected`` (another search's), row
    by row (a whole batch's scores at once may not fit): the same found mask, found slots reachable
    and distinct, and the same top scores up to ``tolerance`` (scored exactly in fp32 here: searches
    may round scores differently and so pick other entries among near-ties)."""
    from block_recurrent_transformer_pytorch.knn_memory import reference_search

    for r in range(q.shape[0]):
        rows = slice(r, r + 1)
        if expected is None:
            expected_index, expected_found = reference_search(q[rows], keys[rows], reachable[rows], top_k)
        else:
            expected_index, expected_found = expected[0][rows], expected[1][rows]
        assert torch.equal(found[rows], expected_found), f"row {r}: found differs"
        got = index[rows][found[rows]].view(-1)
        assert reachable[r][got].all(), f"row {r}: an unreachable slot found"
        distinct = torch.where(found[rows], index[rows], -1 - torch.arange(top_k, device=q.device))
        assert (distinct.sort(-1).values.diff(dim=-1) != 0).all(), f"row {r}: a slot found twice"
        scores = q[rows].float() @ keys[rows].to(q.dtype).float().transpose(-1, -2)
        error = (scores.gather(-1, index[rows]) - scores.gather(-1, expected_index))[expected_found]
        assert error.numel() == 0 or error.abs().max() <= tolerance, f"row {r}: scores off by {error.abs().max()}"


def routed_search_both_ways(q: torch.Tensor, keys: torch.Tensor, reachable: torch.Tensor, top_k: int,
                            route_groups: int, ranges: list) -> tuple[tuple, tuple, list[bool], tuple]:
    """``routed_search`` with the kernels made to serve q's device (knn_memory.FUSED_DEVICES; the
    CPU under Triton's interpreter): its (index, found); what the torch path of its second stage
    (``search_groups``) finds in the groups that run routed to; whether each call of the member
    kernel (knn_kernels.member_scores) masked; and its route search, (group means, routable, route,
    found). The two second stages are compared on one route: the route search scores group means
    in its own precision (the kernels' fp32 products against torch's matmul in q's dtype), and a
    near-tie between groups broken the other way would route a query to other entries, whose
    scores need not be near the first's. The route is an exact search over the group means, to be
    checked as one. Every query in one chunk."""
    from unittest import mock

    from block_recurrent_transformer_pytorch import knn_kernels, knn_memory

    calls, route_searches = [], []
    member_scores, search = knn_kernels.member_scores, knn_memory.search

    def recorded_member_scores(*args):
        calls.append(args[2] is not None)
        return member_scores(*args)

    def recorded_search(q, keys, reachable, *args):
        route_searches.append((keys, reachable, *search(q, keys, reachable, *args)))
        return route_searches[-1][2:]

    with mock.patch.object(knn_memory, "FUSED_DEVICES", (q.device.type,)), \
            mock.patch.object(knn_kernels, "member_scores", recorded_member_scores), \
            mock.patch.object(knn_memory, "search", recorded_search):
        fused = knn_memory.routed_search(q, keys, reachable, top_k, route_groups, budget=2 ** 50, ranges=ranges)
    (route_search,) = route_searches
    with mock.patch.object(knn_memory, "FUSED_DEVICES", ()):
        expected = knn_memory.search_groups(q, keys, reachable, route_search[2], top_k, 2 ** 50, ranges)
    return fused, expected, calls, route_search


def flash_by_reference(monkeypatch) -> list[list[int]]:
    """Stand the flash kernels in by the reference on a CPU (every call flash-eligible, causal aligned
    lower right): the band's call and the variable-length call of ``MemoryRows`` alike. Returns the
    list each call appends the key counts of its sequences that have queries to (one for the band)."""
    from block_recurrent_transformer_pytorch import attention

    calls = []

    def lower_right(q, k, v, scale):
        calls.append([k.shape[-2]])
        return attention.reference_attention(q, k, v, causal=True, scale=scale)

    def varlen(q, k, v, cum_queries, cum_keys, max_queries, max_keys, scale):
        # the kernel's contract: int32 offsets, non-decreasing, spanning q and k; and one query a sequence
        # only without grouped heads (see attention._sdpa_attention)
        for cum, total in ((cum_queries, q.shape[0]), (cum_keys, k.shape[0])):
            assert cum.dtype == torch.int32 and cum[0] == 0 and cum[-1] == total and bool((cum.diff() >= 0).all())
        assert max_queries > 1 or q.shape[1] == k.shape[1]
        outs, seen = [], []
        for i in range(len(cum_queries) - 1):
            qs, ks, vs = q[cum_queries[i]:cum_queries[i + 1]], k[cum_keys[i]:cum_keys[i + 1]], v[cum_keys[i]:cum_keys[i + 1]]
            assert len(qs) <= max_queries and len(ks) <= max_keys
            if len(qs):  # (length, heads, d) -> (1, heads, length, d) and back
                seen.append(len(ks))
                out = attention.reference_attention(*(t.transpose(0, 1)[None] for t in (qs, ks, vs)), causal=True,
                                                    scale=scale)
                outs.append(out[0].transpose(0, 1))
        calls.append(seen)
        return torch.cat(outs)

    monkeypatch.setattr(attention, "_flash_operands", lambda q, k, v: (q, k, v))
    monkeypatch.setattr(attention, "_lower_right_flash", lower_right)
    monkeypatch.setattr(attention, "_varlen_lower_right_flash", varlen)
    return calls
