"""bench/train_py_speed.py: its tokens/s arithmetic over train.py's metrics windows, its summary of a
run, and a --tiny run end to end on CPU (train.py's real metrics.jsonl parsed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import train_py_speed  # noqa: E402


def train_records(rates: dict[int, float], tokens_per_step: int = 100) -> list[dict]:
    """train records as train.py logs them: at each step of rates, the rate of the window ending there."""
    return [dict(step=s, kind="train", bpc=1.0, tokens_per_s=r, tokens=s * tokens_per_step) for s, r in rates.items()]


def test_window_rate_weighs_windows_by_their_tokens_and_time():
    # windows (0,10] (10,20] (20,25] (25,30]: 1000, 1000, 500, 500 tokens
    records = train_records({10: 10.0, 20: 1000.0, 25: 250.0, 30: 500.0})
    records.insert(1, dict(step=10, kind="val", bpc=2.0))  # other kinds are ignored
    got = train_py_speed.window_rate(records, 10, 30)
    # 2000 tokens over 1 + 2 + 1 s
    assert got == dict(tok_per_s=500, steps=20, first_step=11, last_step=30, seconds=4.0)
    # a window is taken whole or not at all: (10, 20] only
    assert train_py_speed.window_rate(records, 5, 20)["steps"] == 10
    assert train_py_speed.window_rate(records, 0, 30)["tok_per_s"] == round(3000 / 104)
    assert train_py_speed.window_rate(records, 30, 40) is None


def test_summary_of_a_run():
    records = train_records({10: 100.0, 20: 200.0})
    records += [dict(step=1, kind="first_step", seconds=61.5, wall_time=1070.0),
                dict(step=20, kind="val_full", bpc=1.23456), dict(step=20, kind="test_full", bpc=1.3)]
    lines = [(3.0, "device: cuda:0, bf16 autocast, TrainStep (CUDA graphs), compiled; output: x"),
             (4.0, "compiling the training step, once (about a minute at the default size; minutes for a billion parameters)..."),
             (75.5, "step 10: val loss 1.0 nats, 1.4 bpc"), (77.0, "--- sample at step 10 ---"),
             (80.0, "val: 1.2346 bpc over all 9 predicted bytes")]
    got = train_py_speed.summarise_run(records, lines, launched_wall=1000.0, start=10, end=20, wall_s=90.0)
    assert got["window"]["tok_per_s"] == 200 and got["to_first_step_s"] == 70.0 and got["first_step_s"] == 61.5
    assert got["eval_lines_at_s"] == {"step 10": 75.5} and got["sample_lines_at_s"] == {"step 10": 77.0}
    assert got["val_full_bpc"] == 1.2346 and got["test_full_bpc"] == 1.3 and got["last_train_bpc"] == 1.0
    assert got["printed"] == [lines[0][1]]
    assert train_py_speed.ratio(3.0, 2.0) == 1.5 and train_py_speed.ratio(3.0, None) is None


def test_corpus_of_python_sources(tmp_path):
    path = train_py_speed.make_corpus(tmp_path / "c.txt", 50_000)
    assert path.stat().st_size >= 50_000 and b"def " in path.read_bytes()


def test_tiny_run_end_to_end(tmp_path):
    out = tmp_path / "speed.jsonl"
    done = subprocess.run(
        [sys.executable, "bench/train_py_speed.py", "--device", "cpu", "--tiny", "--no-seed", "--steps", "4",
         "--from-step", "2", "--eager-steps", "4", "--eager-from-step", "2", "--work-dir", str(tmp_path / "work"),
         "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert json.loads(out.read_text().splitlines()[-1]) == result
    for part in ("default", "eager"):
        assert result[part]["returncode"] == 0
        assert result[part]["window"]["steps"] == 2 and result[part]["window"]["tok_per_s"] > 0
        assert any(line.startswith("device: cpu") for line in result[part]["printed"])
    assert "step 4" in result["default"]["eval_lines_at_s"] and result["default"]["test_full_bpc"] > 0
    assert result["default"]["flags"] == "defaults but --sample-interval 1"  # 4 steps: a sample at every step
    assert list(result["default"]["sample_lines_at_s"]) == ["step 1", "step 2", "step 3", "step 4"]
    assert "test_full_bpc" not in result["eager"]  # stopped with --stop-at-step: no final pass
    assert result["default_over_eager"] == pytest.approx(
        result["default"]["window"]["tok_per_s"] / result["eager"]["window"]["tok_per_s"], abs=0.01)
