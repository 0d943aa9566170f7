"""bench/window_redundancy.py: LZMA2 bits/byte by dictionary size, an estimate of the repeats in a
document further back than a window."""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import window_redundancy  # noqa: E402


def _random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def test_a_larger_window_saves_exactly_the_far_repeats():
    """A random block repeated 20 KB later: a 64 KiB dictionary codes the repeat as one copy, a 4 KiB one
    cannot reach it; without a repeat, the two windows code the document alike."""
    block, filler = _random_bytes(3000, 0), _random_bytes(20000, 1)
    repeated = block + filler + block
    near, far = (window_redundancy.bits_per_byte([repeated], w) for w in (4096, 65536))
    assert near - far > 8 * 2500 / len(repeated)  # most of the 3000 repeated bytes (less the copies' codes)
    plain = _random_bytes(len(repeated), 2)
    near, far = (window_redundancy.bits_per_byte([plain], w) for w in (4096, 65536))
    assert abs(near - far) < 0.01


def test_a_window_below_lzmas_smallest_dictionary_or_no_bytes_is_refused():
    with pytest.raises(ValueError, match="window must be at least 4096 bytes.*got 2048"):
        window_redundancy.bits_per_byte([b"abc"], 2048)
    with pytest.raises(ValueError, match="docs must hold at least one byte, got 1 documents"):
        window_redundancy.bits_per_byte([b""], 4096)


def test_a_tiny_run_reports_each_window():
    result = window_redundancy.main(["--tiny", "--eval-bytes", "20000", "--windows", "4096", "65536"])
    assert list(result) == [4096, 65536] and all(math.isfinite(v) and v > 0 for v in result.values())
    assert result[65536] <= result[4096]
