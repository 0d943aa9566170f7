"""kNN memory: a FIFO store of past keys/values, searched exactly or by routed queries, reaching
beyond the XL memory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from block_recurrent_transformer_pytorch import BlockRecurrentTransformer, RecurrentTrainerWrapper
from block_recurrent_transformer_pytorch.generation import CachedDecoder, ReferenceDecoder
from block_recurrent_transformer_pytorch.attention import attention_with_logsumexp
from block_recurrent_transformer_pytorch import knn_memory
from block_recurrent_transformer_pytorch.knn_memory import (KNNMemory, fused_search_fits, joint_softmax, recall,
                                                            reference_search, routed_search, search)
from block_recurrent_transformer_pytorch.top_k import grouped_top_k, masked_top_k

from .helpers import (VOCAB, assert_whole_run_equals_segments, decode_each_step, run_segments,
                      small_model, tokens)

KNN = dict(knn_layers=(3,), knn_memory_size=24, knn_top_k=4)


def _knn(retrieval: str) -> dict:
    """KNN retrieving by ``retrieval``; query_routed takes blocks of 16 (its groups of 16 entries hold
    consecutive positions) and a store of one block in 32 slots, each query routed to one group of 16."""
    if retrieval == "query_routed":
        return dict(KNN, knn_retrieval=retrieval, block_width=16, knn_memory_size=16, knn_route_groups=1)
    return dict(KNN, knn_retrieval=retrieval)


def _store(capacity: int, slack: int = 0, reserve: int = 0, batch: int = 2) -> KNNMemory:
    return KNNMemory.empty(1, batch, 1, 8, capacity, slack=slack, reserve=reserve)


def _block(number: int, batch: int = 2, n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Random keys, and values holding the block's number (to read back what a view reaches)."""
    return torch.randn(1, batch, 1, n, 8), torch.full((1, batch, 1, n, 8), float(number))


def _reached(store: KNNMemory) -> list[list[int]]:
    """Per row, the numbers of the blocks whose entries the store reaches (all of them retrieved)."""
    _, values, found = store.retrieve(torch.zeros(store.keys.shape[1], 1, 1, 8), 0, store.capacity)
    return [sorted(row[0, 0][row_found[0, 0]][:, 0].long().tolist()) for row, row_found in zip(values, found)]


def test_fifo_reaches_the_newest_entries_only():
    store = _store(capacity=4, slack=2)
    for number in range(5):
        store = store.write(*_block(number))
    assert _reached(store) == [[3, 3, 4, 4]] * 2  # capacity 4 = two blocks of 2; the slack's block is out of reach
    assert store.written == 10 and int(store.position) == 10


def test_views_are_values_whatever_is_written_after_them():
    """A view retrieves the same after later writes from it (past the ring's size: in place where
    nothing live is lost, into a copy otherwise), after a branch written from it, and after a reset."""
    torch.manual_seed(0)
    store = _store(capacity=8, slack=4)
    for number in range(6):
        store = store.write(*_block(number))
    held, expected = store, _reached(store)
    for number in range(6, 16):  # 10 blocks: the ring of 12 slots wraps
        store = store.write(*_block(number))
    branch = held.write(*_block(99))
    reset = held.reset(torch.tensor([True, False]))
    assert _reached(held) == expected == [[2, 2, 3, 3, 4, 4, 5, 5]] * 2
    assert _reached(store) == [sorted(2 * [12, 13, 14, 15])] * 2
    assert _reached(branch) == [[3, 3, 4, 4, 5, 5, 99, 99]] * 2
    assert _reached(reset) == [[], expected[1]]
    # the block written after a reset is still the old document's in the reset row
    assert _reached(reset.write(*_block(7), rows_valid=torch.tensor([False, True]))) == [[], expected[1][2:] + [7, 7]]


def test_writes_go_in_place_unless_a_live_view_would_lose_entries():
    store = _store(capacity=8, slack=4, reserve=4)
    sizes = []
    for number in range(8):
        store = store.write(*_block(number))
        sizes.append(store.allocated)
    assert sizes == [4, 4, 8, 8, 12, 12, 12, 12]  # grows by doubling, to the ring's 12 slots
    buffer = store.keys
    for number in range(8, 12):  # older views dropped: nothing to keep
        store = store.write(*_block(number))
        assert store.keys is buffer
    held = store
    for number in (12, 13):  # overwrite blocks 6 and 7, which the held view no longer reaches: the slack
        store = store.write(*_block(number))
        assert store.keys is buffer
    store = store.write(*_block(14))  # would overwrite block 8's: the held view's oldest
    assert store.keys is not buffer and _reached(held) == [[8, 8, 9, 9, 10, 10, 11, 11]] * 2
    assert _reached(store) == [[11, 11, 12, 12, 13, 13, 14, 14]] * 2


def _random_view(position: int, starts: list[int], capacity: int = 960, slots: int = 1024,
                 dtype: torch.dtype = torch.float32) -> KNNMemory:
    """A store of random unit keys in every slot, as left after ``position`` entries were written,
    the host knowing the latest row start (``ranges_to_mask`` then masks only the slots some row
    may not reach)."""
    keys = torch.nn.functional.normalize(torch.randn(1, 2, 2, slots, 8), dim=-1).to(dtype)
    return KNNMemory(keys, keys.clone(), torch.tensor(position), torch.tensor(starts), capacity, slots, position,
                     max(starts))


SEARCH_LAYOUTS = {  # position, row starts: the ring partly filled, wrapped, after resets (rows reaching few or none)
    "partly_filled": (600, [0, 0]),
    "fewer_than_top_k": (5, [0, 0]),
    "wrapped": (3000, [0, 0]),
    "wrapped_unaligned": (2061, [0, 0]),
    "resets": (2000, [1997, 2000]),
    "reset_mid_window": (1500, [1101, 0]),
}


@pytest.mark.parametrize("layout", list(SEARCH_LAYOUTS))
@pytest.mark.parametrize("budget", [None, 2000])  # one chunk of queries, or chunks of one query
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("masked", ["store's ranges", "every slot"])
def test_search_equals_the_brute_force_reference(layout, budget, dtype, masked):
    """Over the store's reachable slots (the slots searched, or all of them), the grouped, chunked
    search finds the same top scores as scoring every slot and torch.topk over the reachable ones,
    and the same found mask: masking every slot, or only the store's ranges_to_mask (a store full
    or filling without resets masks little or nothing, one with resets more)."""
    torch.manual_seed(0)
    store = _random_view(*SEARCH_LAYOUTS[layout], dtype=dtype)
    q = torch.randn(2, 2, 5, 8).to(dtype)
    for searched in (store.searched(7), store.allocated):
        keys, reachable = store.keys[0, ..., :searched, :], store.reachable(searched)
        ranges = store.ranges_to_mask(searched) if masked == "store's ranges" else None
        index, found = search(q, keys, reachable, 7, budget=budget, ranges=ranges)
        everywhere, all_reachable = store.keys[0], store.reachable(store.allocated)
        expected_index, expected_found = reference_search(q, everywhere, all_reachable, 7)
        scores = q @ everywhere.transpose(-1, -2)
        assert torch.equal(found, expected_found)
        torch.testing.assert_close(scores.gather(-1, index) * found, scores.gather(-1, expected_index) * found,
                                   rtol=0, atol=0)
        assert all_reachable[:, None, None, :].expand_as(scores).gather(-1, index)[found].all()


def _grouped_top_k_case(layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (3, 4, 1024) and allowed slots (3, 1, 1024) of a layout of test_grouped_top_k_equals_masked_top_k."""
    slots = torch.arange(1024)
    scores = torch.randn(3, 4, 1024)
    allowed = torch.ones(3, 1, 1024, dtype=torch.bool)
    if layout == "best_in_consecutive_slots":
        scores[..., 320:327] += 10.0
    if layout == "best_in_one_group":  # group 3 of 16 strided groups of 64: slots 3, 67, 131, ...
        scores[..., 3::64] += 10.0
    if layout == "run":  # runs not aligned to groups, the best scores just outside one
        allowed = (slots >= torch.tensor([[5], [300], [1019]])).unsqueeze(1) & (slots < 1021)
        scores[..., 299] += 10.0
    if layout == "wrapped_run":
        allowed = ((slots < 37) | (slots >= 1003)).expand(3, 1, 1024)
    if layout == "nothing":
        allowed = torch.zeros(3, 1, 1024, dtype=torch.bool)
    if layout == "random_mask":  # an edge at about every other slot
        allowed = torch.rand(3, 1, 1024) < 0.5
    if layout == "alternating":  # every other slot, the disallowed ones scoring highest
        allowed = (slots % 2 == 0).expand(3, 1, 1024)
        scores[..., 1::2] += 10.0
    if layout == "fewer_than_k_in_one_group":  # 3 allowed slots, all in group 5: 4 of the top 7 not found
        allowed = torch.zeros(3, 1, 1024, dtype=torch.bool)
        allowed[..., 5:3 * 64:64] = True
    if layout == "ties":  # integer scores: many equal maxima among groups and among entries
        scores = torch.randint(-4, 5, (3, 4, 1024)).float()
        allowed = torch.rand(3, 1, 1024) < 0.3
    return scores, allowed


@pytest.mark.parametrize("group", [16, 4])
@pytest.mark.parametrize("layout", ["random", "best_in_consecutive_slots", "best_in_one_group", "run", "wrapped_run",
                                    "nothing", "random_mask", "alternating", "fewer_than_k_in_one_group", "ties"])
def test_grouped_top_k_equals_masked_top_k(layout, group):
    """Strided group maxima, then the best groups' entries: the same top k as masking every score and
    torch.topk, wherever the best scores sit and whatever slots a row allows (any number of edges, or
    none allowed); with ties, the same values (the entries among equal ones may differ). Groups of 4
    leave 256 maxima a row, long enough that the best groups are found by grouping the maxima too."""
    torch.manual_seed(0)
    scores, allowed = _grouped_top_k_case(layout)
    masked = scores.masked_fill(~allowed, float("-inf"))
    values, index = grouped_top_k(scores.clone(), allowed, 7, group=group)
    expected_values, expected_index = masked_top_k(scores, allowed, 7)
    torch.testing.assert_close(values, expected_values, rtol=0, atol=0)
    torch.testing.assert_close(masked.gather(-1, index), expected_values, rtol=0, atol=0)
    if layout in ("random", "best_in_consecutive_slots", "best_in_one_group"):  # no ties: the same entries, in order
        assert torch.equal(index, expected_index)


def test_grouped_top_k_with_groups_of_one_is_a_plain_top_k():
    """A group of one slot shortens nothing: grouped_top_k then takes torch.topk, not endless grouping."""
    scores = torch.randn(2, 3, 256)
    values, index = grouped_top_k(scores.clone(), None, 5, group=1)
    expected_values, expected_index = masked_top_k(scores, None, 5)
    assert torch.equal(values, expected_values) and torch.equal(index, expected_index)


def test_search_leaves_its_arguments_intact():
    """search masks scores it computed itself, never the caller's tensors: after it, q, keys and
    reachable are unchanged and a second search finds the same (scattered reachable slots, several
    chunks of queries, rows long enough to be grouped)."""
    torch.manual_seed(0)
    q, keys = torch.randn(2, 2, 5, 8), torch.nn.functional.normalize(torch.randn(2, 2, 1024, 8), dim=-1)
    reachable = torch.rand(2, 1024) < 0.5
    before = [t.clone() for t in (q, keys, reachable)]
    first = search(q, keys, reachable, 7, budget=2 * 2 * 1024 * 2)
    assert all(torch.equal(t, saved) for t, saved in zip((q, keys, reachable), before))
    second = search(q, keys, reachable, 7, budget=2 * 2 * 1024 * 2)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    index, found = first
    expected_index, expected_found = reference_search(q, keys, reachable, 7)
    scores = q @ keys.transpose(-1, -2)
    assert torch.equal(found, expected_found) and found.all()
    assert torch.equal(scores.gather(-1, index), scores.gather(-1, expected_index))


def _slots_outside(ranges: list[tuple[int, int]], searched: int) -> torch.Tensor:
    """(searched,) bool: the slots that no range of ``ranges`` holds."""
    outside = torch.ones(searched, dtype=torch.bool)
    for lo, hi in ranges:
        outside[lo:hi] = False
    return outside


def test_ranges_to_mask_hold_every_slot_some_row_may_not_reach():
    """Outside ranges_to_mask, every slot searched is reachable in every row: through writes that
    wrap the ring, resets of some rows, writes from before a reset (rows_valid), and in views held
    while the ring is written past them (their slack then holds newer entries)."""
    torch.manual_seed(0)
    store = _store(capacity=8, slack=4, reserve=4, batch=3)
    views = []
    for step in range(60):
        action = torch.rand(()).item()
        if action < 0.15:
            store = store.reset(torch.rand(3) < 0.5)
        elif action < 0.3:
            store = store.write(*_block(step, batch=3), rows_valid=torch.rand(3) < 0.5)
        else:
            store = store.write(*_block(step, batch=3))
        views.append(store)
    masked = searched_in_all = 0
    for view in views:
        for searched in (view.searched(3), view.allocated):
            ranges = view.ranges_to_mask(searched)
            assert view.reachable(searched)[:, _slots_outside(ranges, searched)].all()
            masked += sum(hi - lo for lo, hi in ranges)
            searched_in_all += searched
    assert 0 < masked < searched_in_all  # some slots masked, some spared


def test_a_store_without_resets_masks_its_slack_alone():
    """Without a reset, ranges_to_mask holds nothing while the store fills (its written slots are
    all reachable; top_k past them adds unwritten ones), then the slots of the entries past the
    capacity alone (the slack, once the ring is full), wherever the ring has wrapped to."""
    store = _store(capacity=8, slack=4, reserve=4)
    assert store.ranges_to_mask(store.searched(2)) == [(0, 2)]  # nothing written: top_k unwritten slots
    for number in range(9):
        store = store.write(*_block(number))
        written, searched = store.written, store.searched(2)
        # the entries written before the newest 8, those still in the ring of 12 slots
        out_of_reach = sorted(position % 12 for position in range(max(0, written - 12), written - 8))
        masked = _slots_outside(store.ranges_to_mask(searched), searched).logical_not().nonzero().flatten()
        assert masked.tolist() == out_of_reach
    assert store.ranges_to_mask(12) == [(6, 10)]  # 18 written: the ring wrapped, the slack in its middle
    assert store.to(torch.float64).ranges_to_mask(12) == [(6, 10)]  # a moved view keeps what the host knows
    full = _store(capacity=8)
    for number in range(6):
        full = full.write(*_block(number))
    assert full.ranges_to_mask(8) == []  # no slack: nothing to mask at all


def test_search_masks_only_its_ranges():
    """search (the torch path: on the CPU) reads ``reachable`` within ``ranges`` alone: told that no
    slot needs masking, it masks nothing, however ``reachable`` reads; told a range, it masks there."""
    torch.manual_seed(0)
    q, keys = torch.randn(2, 2, 5, 8), torch.nn.functional.normalize(torch.randn(2, 2, 1024, 8), dim=-1)
    nowhere = torch.zeros(2, 1024, dtype=torch.bool)
    index, found = search(q, keys, nowhere, 7, ranges=[])
    expected_index, _ = reference_search(q, keys, ~nowhere, 7)
    scores = q @ keys.transpose(-1, -2)
    assert found.all() and torch.equal(scores.gather(-1, index), scores.gather(-1, expected_index))
    index, found = search(q, keys, nowhere, 7, ranges=[(0, 512)])
    assert found.all() and (index >= 512).all()



def test_search_on_the_cpu_takes_the_torch_path(monkeypatch):
    """The fused kernels (knn_kernels, Triton) serve CUDA alone: a CPU search (exact or routed) never
    asks for them, even where they would fit, and finds the reference's entries."""
    def no_kernels():
        raise AssertionError("a CPU search asked for the fused kernels")

    monkeypatch.setattr(knn_memory, "_fused_kernels", no_kernels)
    torch.manual_seed(0)
    q, keys = torch.randn(2, 1, 5, 16), F.normalize(torch.randn(2, 1, 2048, 16), dim=-1)
    reachable = torch.rand(2, 2048) < 0.5
    assert fused_search_fits(q, keys, 8)
    index, found = search(q, keys, reachable, 8)
    expected_index, expected_found = reference_search(q, keys, reachable, 8)
    scores = q @ keys.transpose(-1, -2)
    assert torch.equal(found, expected_found) and torch.equal(scores.gather(-1, index), scores.gather(-1, expected_index))
    routed_search(q, keys, torch.ones_like(reachable), 8, route_groups=4)


@pytest.mark.parametrize("slots, dim, dtype, fits", [
    (2048, 64, torch.bfloat16, True),
    (2048, 256, torch.float32, True),
    (4100, 64, torch.bfloat16, False),  # not a whole number of groups of 16
    (2032, 64, torch.bfloat16, False),  # 127 groups, fewer than 4 top_k: torch.topk over the row
    (2048, 64, torch.float64, False),  # no tl.dot in float64
    (2048, 512, torch.bfloat16, False),  # wider than FUSED_MAX_DIM
])
def test_fused_search_fits_where_the_kernels_apply(slots, dim, dtype, fits):
    q, keys = torch.zeros(1, 1, 3, dim, dtype=dtype), torch.zeros(1, 1, slots, dim, dtype=dtype)
    assert fused_search_fits(q, keys, 32) == fits

def test_retrieving_from_a_full_store_masks_no_score_but_the_slack(monkeypatch):
    """A full store without resets masks no score where it has no slack, and only its slack's
    columns where it has: the scores are not masked whole (the pass a search no longer makes).
    A reset row makes it mask every column it may no longer reach."""
    torch.manual_seed(0)
    masked_columns = []
    masked_fill_ = torch.Tensor.masked_fill_
    monkeypatch.setattr(torch.Tensor, "masked_fill_",
                        lambda self, *args: masked_columns.append(self.shape[-1]) or masked_fill_(self, *args))
    q = torch.randn(2, 1, 5, 8)
    for slack, columns in ((0, []), (64, [64])):
        store = _store(capacity=1024, slack=slack, reserve=1024)  # long rows: grouped_top_k's two passes
        for _ in range(20):  # the ring wraps
            store = store.write(torch.randn(1, 2, 1, 64, 8), torch.randn(1, 2, 1, 64, 8))
        masked_columns.clear()
        store.retrieve(q, 0, 4)
        assert masked_columns == columns
    masked_columns.clear()
    store.reset(torch.tensor([True, False])).retrieve(q, 0, 4)
    assert sum(masked_columns) == store.slots


def _reference_routed_search(q: torch.Tensor, keys: torch.Tensor, reachable: torch.Tensor, top_k: int,
                             route_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``routed_search`` written out: each group's mean reachable key, each query's best groups by
    torch.topk, then the exact top-k of every slot masked to the reachable slots of those groups."""
    count = reachable.unflatten(-1, (-1, 16)).sum(-1)
    means = (keys * reachable[:, None, :, None]).unflatten(-2, (-1, 16)).sum(-2) / count.clamp(min=1)[:, None, :, None]
    route_scores = (q @ means.transpose(-1, -2)).masked_fill(~(count > 0)[:, None, None, :], float("-inf"))
    route = route_scores.topk(min(route_groups, route_scores.shape[-1]), dim=-1).indices
    in_route = torch.zeros_like(route_scores, dtype=torch.bool).scatter(-1, route, True).repeat_interleave(16, -1)
    scores, index = masked_top_k(q @ keys.transpose(-1, -2), reachable[:, None, None, :] & in_route, top_k)
    return index, scores > float("-inf")


@pytest.mark.parametrize("layout", list(SEARCH_LAYOUTS))
@pytest.mark.parametrize("budget", [None, 2000])  # one chunk of queries, or chunks of one query
def test_routed_search_equals_its_reference(layout, budget):
    """Each query's top-k within the 4 groups whose mean reachable key it scores highest: the same
    found entries as the definition written out, never an unreachable entry; routed to every
    group, the exact search. Slots searched: the written ones in whole groups, or all."""
    torch.manual_seed(0)
    store = _random_view(*SEARCH_LAYOUTS[layout])
    q = torch.randn(2, 2, 5, 8)
    for searched in (-(-store.searched(7) // 16) * 16, store.allocated):
        keys, reachable = store.keys[0, ..., :searched, :], store.reachable(searched)
        index, found = routed_search(q, keys, reachable, 7, route_groups=4, budget=budget)
        expected_index, expected_found = _reference_routed_search(q, keys, reachable, 7, 4)
        scores = q @ keys.transpose(-1, -2)
        assert torch.equal(found, expected_found)
        torch.testing.assert_close(scores.gather(-1, index) * found, scores.gather(-1, expected_index) * found,
                                   rtol=0, atol=0)
        assert reachable[:, None, None, :].expand_as(scores).gather(-1, index)[found].all()
        everywhere = routed_search(q, keys, reachable, 7, route_groups=-(-searched // 16), budget=budget)
        assert all(torch.equal(a, b) for a, b in zip(everywhere, search(q, keys, reachable, 7, budget=budget)))
    with pytest.raises(ValueError, match="routed_search needs whole groups of 16 slots, got 600"):
        routed_search(q, store.keys[0, ..., :600, :], store.reachable(600), 7, route_groups=4)


def test_routed_search_finds_the_nearest_entry_where_neighbouring_keys_are_alike():
    """Keys that drift along the sequence (as a text's do) put each entry among similar ones, so a
    group's mean points where its members do: routed to 16 of 256 groups, a query finds its exact
    nearest entry nearly always. (Random keys are the worst case: a group's mean then hides its
    members, see docs/long-range-memory.md.)"""
    torch.manual_seed(0)
    keys = F.normalize(torch.randn(1, 1, 4096, 16).mul(0.3).cumsum(-2), dim=-1)
    reachable = torch.ones(1, 4096, dtype=torch.bool)
    q = keys[:, :, torch.randint(0, 4096, (256,))] + 0.1 * torch.randn(1, 1, 256, 16)
    routed, _ = routed_search(q, keys, reachable, 1, route_groups=16)
    exact, _ = search(q, keys, reachable, 1)
    assert (routed == exact).float().mean() >= 0.95


def test_routed_search_leaves_its_arguments_intact():
    """routed_search masks only scores it computed itself (its route search's, over the group
    means), never the caller's tensors: q, keys and reachable are unchanged and a second search
    finds the same (rows of groups long enough for grouped_top_k's two passes, a wrapped run reachable)."""
    torch.manual_seed(0)
    q, keys = torch.randn(2, 2, 5, 8), torch.nn.functional.normalize(torch.randn(2, 2, 4096, 8), dim=-1)
    slots = torch.arange(4096)
    reachable = ((slots < 37) | (slots >= 1003)).expand(2, 4096).clone()
    before = [t.clone() for t in (q, keys, reachable)]
    first = routed_search(q, keys, reachable, 7, route_groups=4)
    assert all(torch.equal(t, saved) for t, saved in zip((q, keys, reachable), before))
    second = routed_search(q, keys, reachable, 7, route_groups=4)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    expected_index, expected_found = _reference_routed_search(q, keys, reachable, 7, 4)
    index, found = first
    scores = q @ keys.transpose(-1, -2)
    assert torch.equal(found, expected_found) and found.all()
    assert torch.equal(scores.gather(-1, index), scores.gather(-1, expected_index))


def test_routed_search_of_an_all_reachable_store_takes_plain_means_and_no_flags():
    """ranges=[] (KNNMemory.ranges_to_mask of a store with every slot reachable): the route takes
    the groups' plain means, bit for bit the reachable means, and neither stage reads the flags, so
    the search finds what it finds with them (here even given flags that say otherwise)."""
    from block_recurrent_transformer_pytorch.knn_memory import group_means

    torch.manual_seed(0)
    q = torch.randn(2, 2, 5, 8).bfloat16()
    keys = torch.nn.functional.normalize(torch.randn(2, 2, 4096, 8), dim=-1).bfloat16()
    reachable = torch.ones(2, 4096, dtype=torch.bool)
    plain, flagged = group_means(keys, None), group_means(keys, reachable)
    assert torch.equal(plain[0], flagged[0]) and torch.equal(plain[1], flagged[1])
    expected = routed_search(q, keys, reachable, 7, route_groups=4)
    for flags in (reachable, torch.zeros_like(reachable)):
        got = routed_search(q, keys, flags, 7, route_groups=4, ranges=[])
        assert all(torch.equal(a, b) for a, b in zip(got, expected))


def test_a_search_over_no_slots_finds_nothing():
    """A store of no slots: every query gets top_k places, none found (as the brute-force reference)."""
    q, keys = torch.randn(2, 1, 3, 8), torch.randn(2, 1, 0, 8)
    index, found = search(q, keys, torch.ones(2, 0, dtype=torch.bool), 4)
    assert index.shape == found.shape == (2, 1, 3, 4) and not found.any()


def test_a_search_scores_only_written_slots_and_finds_the_same():
    """A store that knows how many entries it holds scores only those slots (at least top_k), with
    the result of scoring every slot (a store of unknown position, as made inside torch.compile)."""
    torch.manual_seed(0)
    counted = _store(capacity=64, reserve=64)
    for block in range(10):  # the ring wraps at block 8
        counted = counted.write(torch.randn(1, 2, 1, 8, 8), torch.randn(1, 2, 1, 8, 8))
        unknown = KNNMemory(counted.keys, counted.values, counted.position, counted.start, 64, 64)
        assert counted.searched(top_k=4) == max(min(8 * (block + 1), 64), 4) and unknown.searched(top_k=4) == 64
        q = torch.randn(2, 1, 5, 8)
        for got, want in zip(counted.retrieve(q, 0, 4), unknown.retrieve(q, 0, 4)):
            assert torch.equal(got, want)


def test_reset_rows_find_nothing_and_keep_their_local_output():
    store = _store(capacity=4).write(torch.randn(1, 2, 1, 4, 8), torch.randn(1, 2, 1, 4, 8))
    store = store.reset(torch.tensor([True, False]))
    q = torch.randn(2, 2, 3, 8, requires_grad=True)
    memory, memory_lse = recall(q, store, 0, top_k=2, scale=8.0)
    local = torch.randn(2, 2, 3, 8)
    mixed = joint_softmax(local, torch.randn(2, 2, 3, 1), memory, memory_lse)
    assert torch.equal(mixed[0], local[0]) and not torch.allclose(mixed[1], local[1])
    mixed.sum().backward()  # the row with no entry: a zero gradient, not NaN
    assert torch.equal(q.grad[0], torch.zeros_like(q.grad[0])) and q.grad[1].abs().sum() > 0


def test_a_store_with_no_slot_allocated_finds_nothing():
    """KNNMemory.empty allocates no slot by default (reserve=0): retrieving before the first write
    finds nothing, as a store whose slots are all unwritten does, instead of gathering from no slot."""
    q = torch.randn(2, 1, 3, 8)
    for store in (_store(capacity=8), _store(capacity=8, reserve=8)):
        keys, values, found = store.retrieve(q, 0, 4)
        assert keys.shape == values.shape == (2, 1, 3, 4, 8) and found.shape == (2, 1, 3, 4) and not found.any()


@pytest.mark.parametrize("bad, pattern", [(dict(capacity=0), "capacity must be an int >= 1, got 0"),
                                          (dict(slack=-1), "slack must be an int >= 0, got -1"),
                                          (dict(reserve=2.0), r"reserve must be an int >= 0, got 2\.0")])
def test_bad_store_arguments(bad, pattern):
    with pytest.raises(ValueError, match=pattern):
        KNNMemory.empty(1, 2, 1, 8, **{"capacity": 8, **bad})


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


RETRIEVALS = pytest.mark.parametrize("retrieval", ["exact", "query_routed", "routed"])


@RETRIEVALS
@pytest.mark.parametrize("knn_layers, reaches", [((1,), True), ((), False)])
def test_knn_memory_reaches_beyond_the_xl_memory(knn_layers, reaches, retrieval):
    """No recurrence, depth 1: block 5 sees block 4 through the XL memory and block 1 only through the store."""
    model = small_model(depth=1, recurrent_layers=(), **dict(_knn(retrieval), knn_layers=knn_layers))
    x = tokens(1, 48)
    late = run_segments(model, x, 16)[0][:, 32:40]
    late_changed = run_segments(model, _changed_first_block(x), 16)[0][:, 32:40]
    assert (not torch.allclose(late, late_changed)) == reaches


@RETRIEVALS
def test_causality_with_knn_layers(retrieval):
    model = small_model(max_seq_len=32, **_knn(retrieval))
    x = tokens(1, 64)
    reference, _, _ = run_segments(model, x, 32)
    for t in (7, 20, 40):
        changed = x.clone()
        changed[:, t + 1:] = (changed[:, t + 1:] + 1) % VOCAB
        torch.testing.assert_close(run_segments(model, changed, 32)[0][:, :t + 1], reference[:, :t + 1], rtol=0, atol=0)


@RETRIEVALS
def test_whole_run_equals_segment_by_segment_with_knn(retrieval):
    whole = small_model(max_seq_len=64, use_compressed_mem=True, **_knn(retrieval))
    chunked = small_model(max_seq_len=16, use_compressed_mem=True, **_knn(retrieval))
    assert_whole_run_equals_segments(whole, chunked)


@RETRIEVALS
@pytest.mark.parametrize("kv_heads", [1, 2])
@pytest.mark.parametrize("decoder_cls", [CachedDecoder, ReferenceDecoder])
def test_decoding_with_knn_equals_the_full_forward(decoder_cls, kv_heads, retrieval):
    model = small_model(kv_heads=kv_heads, **_knn(retrieval))
    x = tokens(2, 56)
    expected, _, _ = run_segments(model, x, 16)
    got = decode_each_step(decoder_cls(model, *model.prepare(2)), x, prefill=5)
    torch.testing.assert_close(got, expected[:, 4:], rtol=1e-5, atol=1e-5)


@RETRIEVALS
def test_bf16_autocast_runs_and_stays_close_to_fp32(retrieval):
    """The joint softmax mixes bf16 attention outputs with fp32 normalisers: under autocast the
    forward and backward run (no dtype mismatch), gradients are finite and the loss is fp32's
    up to bf16 rounding."""
    model = small_model(kv_heads=2, **_knn(retrieval)).train()
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
    model = small_model(**_knn(retrieval)).train()
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
    (dict(knn_layers=(1,), knn_retrieval="query_routed", block_width=16, knn_memory_size=64, knn_top_k=33,
          knn_route_groups=2),
     r"knn_route_groups \(2\) groups of 16 entries cannot hold knn_top_k \(33\) entries: use knn_route_groups >= 3"),
    (dict(knn_layers=(1,), knn_route_groups=0), "knn_route_groups must be a positive int"),
    (dict(knn_layers=(1,), knn_retrieval="query_routed", knn_memory_size=64),
     r"knn_retrieval='query_routed' needs a block_width that is a multiple of 16 .*, got 8"),
])
def test_bad_knn_arguments(overrides, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        BlockRecurrentTransformer(**{**dict(num_tokens=VOCAB, dim=32, depth=3, dim_head=8, heads=4, max_seq_len=16,
                                            block_width=8), **overrides})


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


def test_memories_passed_back_give_the_same_logits():
    """Calling the model twice from the same memories gives identical logits, after the model went on
    from them for several calls (the store wrapping past its slack), after a branch from them, and
    after generating from them."""
    model = small_model(**KNN)
    x = tokens(2, 160)
    _, memories, states = run_segments(model, x[:, :64], 16)
    expected, _, _ = model(x[:, 64:80], xl_memories=memories, states=states)
    run_segments(model, x[:, 64:], 16, memories=memories, states=states)  # 6 calls: the 40-slot ring wraps
    model(x[:, 100:116], xl_memories=memories, states=states)  # a branch
    model.generate(x[:, 64:66], 60, xl_memories=memories, states=states, temperature=0.0)
    got, _, _ = model(x[:, 64:80], xl_memories=memories, states=states)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_the_store_is_written_in_place_from_call_to_call():
    """Carrying the memories from call to call (the caller dropping the old ones), the store stays
    one buffer once it has grown to the whole ring: no copy per block or per call."""
    model = small_model(**KNN)
    memories = states = None
    buffers = []
    for segment in tokens(2, 160).split(16, dim=1):
        _, memories, states = model(segment, xl_memories=memories, states=states)
        buffers.append(memories.knn.keys)
    assert memories.knn.allocated == memories.knn.slots == 24 + 16
    full = next(i for i, keys in enumerate(buffers) if keys.shape[-2] == 40)
    assert all(keys is buffers[full] for keys in buffers[full:]) and full <= 4


@RETRIEVALS
@pytest.mark.parametrize("checkpointing", [False, True])
def test_gradients_equal_with_the_store_copied_at_every_write(retrieval, checkpointing, monkeypatch):
    """Writing in place changes no loss or gradient (backprop through three segments, with and without
    activation checkpointing, which recomputes blocks after later writes): the same as when every
    view is kept alive, so that every write past the slack goes into a copy."""
    def loss_and_grads(model):
        _, memories, states = run_segments(model, tokens(2, 48), 16)  # the ring allocated whole
        loss = 0.0
        for segment in tokens(2, 51, seed=3).split(17, dim=1):  # 16 inputs each: whole blocks, written
            segment_loss, memories, states = model(segment, return_loss=True, xl_memories=memories, states=states,
                                                   detach=False)
            loss = loss + segment_loss
        loss.backward()
        return loss.detach(), [p.grad for p in model.parameters()]

    make = dict(activation_checkpointing=checkpointing, **_knn(retrieval))
    in_place = loss_and_grads(small_model(**make).train())
    kept, write = [], KNNMemory.write
    monkeypatch.setattr(KNNMemory, "write", lambda self, *args: kept.append(write(self, *args)) or kept[-1])
    copied = loss_and_grads(small_model(**make).train())
    assert len({id(view.keys) for view in kept if view.allocated == view.slots}) > 1  # the whole ring was copied
    torch.testing.assert_close(in_place[0], copied[0], rtol=0, atol=0)
    for got, expected in zip(in_place[1], copied[1]):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


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
    # a store written inside torch.compile continues eagerly (its position read back once)
    got, _, _ = model(x[:, :16], xl_memories=memories, states=states)
    expected, _, _ = model(x[:, :16], xl_memories=reference_memories, states=reference_states)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_group_means_ignore_what_unreachable_slots_hold():
    """A group's mean reachable key is the same, bit for bit, whatever its unreachable slots hold
    (entries written after a view): a view must route alike whatever the ring's later history."""
    from block_recurrent_transformer_pytorch.knn_memory import group_means

    generator = torch.Generator().manual_seed(0)
    keys = torch.randn(2, 1, 64, 8, generator=generator).bfloat16()
    reachable = torch.zeros(2, 64, dtype=torch.bool)
    reachable[0, 5:37] = True  # groups 0 and 2 partly reachable
    reachable[1, 20:] = True   # group 1 partly reachable
    means, routable = group_means(keys, reachable)
    scrambled = torch.where(reachable[:, None, :, None], keys, 1e3 * torch.randn(keys.shape, generator=generator).bfloat16())
    again, routable_again = group_means(scrambled, reachable)
    assert torch.equal(routable, routable_again) and routable.sum() == 6  # groups of no reachable entry: never routed
    used = routable[:, None].expand_as(means[..., 0])
    assert torch.equal(means[used], again[used])
    members = keys.float() * reachable[:, None, :, None]
    expected = members.unflatten(-2, (4, 16)).sum(-2) / reachable.unflatten(-1, (4, 16)).sum(-1).clamp(min=1)[:, None, :, None]
    torch.testing.assert_close(means.float()[used], expected[used], rtol=2e-2, atol=2e-2)


def test_memory_dropout_keeps_the_knn_store():
    """The wrapper's memory dropout forgets the XL memories, not the kNN store: with every segment's
    memories dropped, the store still reaches each row's whole document but the block the XL memory
    holds at the end, as without dropout."""
    model = small_model(**dict(KNN, knn_memory_size=48)).train()
    for dropout in (0.0, 1.0):
        wrapper = RecurrentTrainerWrapper(model, xl_memories_dropout=dropout)
        _, memories, _ = wrapper(tokens(2, 3 * 16 + 1), return_memories_and_states=True)
        assert (memories.knn.position - memories.knn.start).tolist() == [40, 40], dropout


def test_without_recent_forgets_the_xl_memories_and_moves_their_block_to_the_store():
    """Memories.without_recent (what memory dropout leaves): the next segment's logits equal those of
    a start with no memories (compressed ones too); with a kNN layer, the XL memory's block goes into
    the store as part of each row's document, unless the row's document starts after it."""
    model = small_model(use_compressed_mem=True)
    x = tokens(2, 32)
    _, memories, _ = model(x[:, :16])
    forgotten, _, _ = model(x[:, 16:], xl_memories=memories.without_recent(model.config))
    fresh, _, _ = model(x[:, 16:])
    torch.testing.assert_close(forgotten, fresh, rtol=1e-5, atol=1e-5)

    model = small_model(**KNN)
    _, memories, _ = model(x[:, :16])
    assert (memories.knn.position - memories.knn.start).tolist() == [8, 8]
    kept = memories.without_recent(model.config)
    assert kept.xl.shape[-2] == 0 and (kept.knn.position - kept.knn.start).tolist() == [16, 16]
    # row 1's document starts after the XL memory's block: the block is written, out of row 1's reach
    restarted = memories.reset(torch.tensor([False, True]), model.config)
    kept = restarted.without_recent(model.config)
    assert (kept.knn.position - kept.knn.start).tolist() == [16, 0]


@pytest.mark.parametrize("seed_layout", [True, False], ids=["seed-list", "empty-list"])
def test_memory_dropout_takes_the_seeds_list_of_memories(seed_layout):
    """The seed's per-layer list (or []) passed to the wrapper still works when memory dropout fires."""
    model = small_model().train()
    _, memories, _ = model(tokens(2, 16))
    given = list(memories) if seed_layout else []
    wrapper = RecurrentTrainerWrapper(model, xl_memories_dropout=1.0)
    loss, _, _ = wrapper(tokens(2, 17), xl_memories=given, return_memories_and_states=True)
    fresh, _, _ = RecurrentTrainerWrapper(model)(tokens(2, 17), return_memories_and_states=True)
    torch.testing.assert_close(loss, fresh)
