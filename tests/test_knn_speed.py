"""bench/knn_speed.py: the kNN layer's cost estimate, and a --tiny run end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import knn_speed  # noqa: E402


def test_knn_layer_ratio():
    # a plain layer: 5 layers - 4 layers = 1.0 s; the kNN layer: 1.0 + 0.5 s more than the plain layer 4
    assert knn_speed.knn_layer_ratio(dict(plain=4.0, plain5=5.0, knn=4.5)) == 1.5
    assert knn_speed.knn_layer_ratio(dict(plain=4.0, plain5=3.9, knn=4.5)) is None  # noise larger than a layer


def test_tiny_run_end_to_end(tmp_path):
    out = tmp_path / "knn_speed.jsonl"
    knn_speed.main(["--device", "cpu", "--tiny", "--fillers", "256", "--trials", "2", "--eval-batch", "2",
                    "--steps", "1", "--out", str(out)])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0]["case"] == "env" and "knn_speed.py" in records[0]["command"]
    assert not [r for r in records if "error" in r]
    train = [(r["store"], r["model"]) for r in records if r["case"] == "train"]
    assert train == [(store, model) for store in ("empty", "full") for model in knn_speed.MODELS]
    assert [r["store"] for r in records if r["case"] == "train_ratio"] == ["empty", "full"]
    evals = [r for r in records if r["case"] == "eval"]
    assert [(r["filler"], r["trials"]) for r in evals] == [(256, 2)] and evals[0]["s_per_trial"] > 0
    assert [r["batch"] for r in records if r["case"] == "peak"] == [8]
    assert "| passkey eval | D = 256 | knn |" in out.with_suffix(".md").read_text()


def test_profile_covers_evaluation_and_training_from_either_store(monkeypatch):
    """--profile (CUDA) profiles an evaluation segment and a training step of every model from an
    empty and from a full store, each step built and run (off CUDA with the kernel profiler replaced
    by two calls of the step), then the kNN layer's ratio per store from the kernel times."""
    kernel_ms = iter([50.0] + [4000.0, 5000.0, 4500.0] * 2)  # eval, then plain, plain5, knn per store

    def fake_kernels(fn, device):
        fn(), fn()
        return {"kernel_ms": next(kernel_ms), "kernels": 0}, []

    monkeypatch.setattr(knn_speed, "kernels", fake_kernels)
    records = []
    cfg = knn_speed.parse_args(["--tiny", "--device", "cpu", "--eval-batch", "2"])
    knn_speed.run_profile(cfg, torch.device("cpu"), records.append)
    assert [(r["case"], r.get("what", r.get("store")), r["batch"]) for r in records] == [
        ("profile", "eval segment, full store", 2)] + [
        record for store in ("empty", "full") for record in
        [("profile", f"train step, {store} store, {name}", 4) for name in knn_speed.MODELS]
        + [("profile_ratio", store, 4)]]
    assert [r["knn_layer_ratio"] for r in records if r["case"] == "profile_ratio"] == [1.5, 1.5]


def test_an_out_of_memory_error_keeps_what_this_process_holds():
    """A GPU out-of-memory message names other processes' memory before this one's: the record keeps
    both (a shared GPU's neighbour, or the process itself?), and other errors their type and head."""
    import common

    message = ("CUDA out of memory. Tried to allocate 1.07 GiB. GPU 0 has a total capacity of 139.80 GiB of which "
               "693.50 MiB is free. Process 682 has 130.02 GiB memory in use. Process 683 has 8.20 GiB memory in use. "
               "Of the allocated memory 120.00 GiB is allocated by PyTorch, and 9.00 GiB is reserved by PyTorch but "
               "unallocated.\nSee documentation for Memory Management")
    described = common.describe_error(torch.OutOfMemoryError(message))
    assert described.startswith("OOM: CUDA out of memory") and "120.00 GiB is allocated by PyTorch" in described
    assert "\n" not in described
    assert common.describe_error(ValueError("x" * 1000)) == "ValueError: " + "x" * 300

