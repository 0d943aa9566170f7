"""bench/optimizer_speed.py: each case's optimizer trains every parameter once, and a --tiny run end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import optimizer_speed  # noqa: E402
from training.optimizer import BatchedMuon, MuonAdamW  # noqa: E402


def parameters_of(optimizer: torch.optim.Optimizer) -> list[int]:
    inner = (optimizer.adamw, optimizer.muon) if isinstance(optimizer, MuonAdamW) else (optimizer,)
    return sorted(id(p) for opt in inner for group in opt.param_groups for p in group["params"])


def test_every_case_steps_every_parameter_once():
    cfg = optimizer_speed.TrainConfig(**{**optimizer_speed.PRESETS["long-documents"], **optimizer_speed.TINY,
                                         "doc_separator": 0})
    model = optimizer_speed.build_model(cfg)
    cases = optimizer_speed.optimizers(model, cfg, torch.device("cpu"))
    assert list(cases) == ["adam_seed", "adamw", "muon_torch", "muon_batched"]
    every = sorted(id(p) for p in model.parameters())
    for name, optimizer in cases.items():
        assert parameters_of(optimizer) == every, name
    assert type(cases["muon_torch"].muon) is torch.optim.Muon
    assert isinstance(cases["muon_batched"].muon, BatchedMuon)


def test_tiny_run_end_to_end(tmp_path):
    out = tmp_path / "optimizer_speed.jsonl"
    optimizer_speed.main(["--tiny", "--steps", "3", "--warmup", "1", "--out", str(out)])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["case"] for r in records] == ["env", "model", "adam_seed", "adamw", "muon_torch", "muon_batched"]
    assert records[1]["hidden_matrices"] == 12
    assert all(r["median_ms"] > 0 and r["steps"] == 3 for r in records[2:])
