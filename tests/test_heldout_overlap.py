"""bench/heldout_overlap.py: how much of each held-out document the training split already holds."""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import heldout_overlap  # noqa: E402


def _random_bytes(n: int, seed: int) -> bytes:
    rng = random.Random(seed)
    return bytes(rng.randrange(1, 256) for _ in range(n))


def test_a_copy_is_found_whole_half_a_copy_half_and_fresh_text_not_at_all():
    train = [_random_bytes(2000, seed) for seed in range(3)]
    half_copy = train[1][:1000] + _random_bytes(1000, 10)
    held_out = [train[2], half_copy, _random_bytes(2000, 11)]
    copy, half, fresh = heldout_overlap.overlap(train, held_out, sample=1)  # every window: exact fractions
    assert copy["shared"] == copy["best_shared"] == 1.0 and copy["best"] == 2
    windows = 2000 - heldout_overlap.WIDTH + 1
    assert half["best"] == 1 and half["best_shared"] == half["shared"] == round((1000 - 31) / windows, 4)
    assert fresh["shared"] == fresh["best_shared"] == 0.0 and fresh["best"] is None


def test_sampling_keeps_a_window_wherever_it_occurs():
    """The windows kept are chosen by hash, not position, so a copy shifted by a few bytes still
    shares all of its sampled windows but those that hold the new bytes."""
    doc = _random_bytes(20000, 3)
    (copy,) = heldout_overlap.overlap([_random_bytes(500, 4), doc], [_random_bytes(7, 5) + doc])
    assert 0 < copy["windows"] < 20000 / 4 and copy["best"] == 1 and copy["best_shared"] > 0.99


def test_a_document_shorter_than_a_window_has_no_fraction():
    (short,) = heldout_overlap.overlap([_random_bytes(100, 1)], [_random_bytes(20, 2)], sample=1)
    assert short["windows"] == 0 and short["shared"] is None and short["best_shared"] is None


def test_the_script_reports_quality_pys_held_out_documents(tmp_path, capsys):
    results = heldout_overlap.main(["--tiny", "--eval-bytes", "3000", "--out", str(tmp_path / "o.jsonl")])
    assert results and all(0.0 <= r["shared"] <= 1.0 for r in results)
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == len(results)
    assert "held-out documents" in capsys.readouterr().out
