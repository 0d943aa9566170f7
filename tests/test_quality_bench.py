"""bench/quality.py (issue 15's harness) end to end on a tiny model and corpus: it trains on documents
read row by row and evaluates held-out documents each from its start."""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import quality  # noqa: E402


def test_a_tiny_quality_run_scores_every_held_out_byte_once(tmp_path):
    records = quality.main(["--tiny", "--model", "ours", "--tokens", "2048", "--eval-bytes", "3000",
                            "--eval-max-doc", "1500", "--out", str(tmp_path / "q.jsonl")])
    result = records[-1]
    assert result["kind"] == "result" and result["tokens"] >= 2048 and result["cut"] is False
    for evaluation in (result["eval"], result["nostate_eval"]):
        assert math.isfinite(evaluation["bpb"])
        # each evaluated document's bytes, every one predicted once, bucketed by its offset
        assert sum(b["bytes"] for b in evaluation["by_offset"].values()) == evaluation["bytes"] == 2 * 1500
    assert any(r["kind"] == "train" for r in records)


def test_a_run_past_its_stop_after_time_is_cut_and_still_evaluated(tmp_path):
    """A budget far beyond the time a run has: --stop-after ends training early, the held-out
    documents are still evaluated, and the result says the run was cut."""
    records = quality.main(["--tiny", "--model", "ours", "--tokens", "1e9", "--stop-after", "0.5", "--eval-bytes",
                            "2000", "--eval-max-doc", "1000", "--no-nostate-eval", "--out", str(tmp_path / "q.jsonl")])
    result = records[-1]
    assert result["kind"] == "result" and result["cut"] is True and result["tokens"] < 1e9
    assert math.isfinite(result["eval"]["bpb"]) and result["eval"]["bytes"] == 2 * 1000


def test_the_offset_plot_draws_a_run(tmp_path):
    import plot_quality  # noqa: E402  (bench/, on the path above)

    records = tmp_path / "q.jsonl"
    quality.main(["--tiny", "--model", "ours", "--tokens", "1024", "--eval-bytes", "2000", "--eval-max-doc", "1000",
                  "--no-nostate-eval", "--out", str(records)])
    plot_quality.main([str(tmp_path / "plot.png"), f"{records}=tiny"])
    assert (tmp_path / "plot.png").stat().st_size > 1000


def test_the_xl_peer_masks_a_rows_memories_from_its_new_documents_start_on():
    """x-transformers keeps one memory tensor per layer for the whole batch, so the harness resets a
    row by masking: where a row starts a new document it sees none of its carried memories, and
    the memories it leaves hold only that document's positions, also when they outlast a segment."""
    import torch

    segment, mem_len = 4, 6
    mask, valid = quality.memory_mask(None, torch.tensor([True, False]), segment, mem_len)
    assert mask is None and valid.tolist() == [[True] * 4, [True] * 4]  # no memories yet: 4 positions, all new
    mask, valid = quality.memory_mask(valid, torch.tensor([False, True]), segment, mem_len)
    assert mask.tolist() == [[True] * 4, [False] * 4]  # row 1 starts a document: hidden from it
    assert valid.tolist() == [[True] * 6, [False, False, True, True, True, True]]  # the last 6 of 4 + 4
    mask, valid = quality.memory_mask(valid, torch.tensor([False, False]), segment, mem_len)
    assert mask.tolist() == [[True] * 6, [False, False, True, True, True, True]]  # the old document stays hidden
    assert valid.tolist() == [[True] * 6, [True] * 6]
