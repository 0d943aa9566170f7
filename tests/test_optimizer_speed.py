"""bench/optimizer_speed.py: each case's optimizer trains every parameter once, and a --tiny run end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import optimizer_speed  # noqa: E402
from training.optimizer import BatchedMuon  # noqa: E402


def test_every_case_steps_every_parameter_with_train_pys_settings():
    cfg = optimizer_speed.TrainConfig(**{**optimizer_speed.PRESETS["long-documents"], **optimizer_speed.TINY,
                                         "doc_separator": 0})
    torch.manual_seed(0)
    model = optimizer_speed.build_model(cfg)
    cases = optimizer_speed.optimizers(model, cfg, torch.device("cpu"))
    assert list(cases) == ["adam_seed", "adamw", "muon_torch", "muon_batched", "muon_split"]
    for name, build in cases.items():
        optimizer = build()
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        before = [p.detach().clone() for p in model.parameters()]
        optimizer.step()
        unmoved = [n for (n, p), b in zip(model.named_parameters(), before) if torch.equal(p, b)]
        assert not unmoved, (name, unmoved)
    torch_muon, batched, split = cases["muon_torch"](), cases["muon_batched"](), cases["muon_split"]()
    assert type(torch_muon.muon) is torch.optim.Muon and isinstance(batched.muon, BatchedMuon)
    assert torch_muon.muon.defaults == batched.muon.defaults and batched.muon.defaults["lr"] == cfg.muon_lr
    # the timed pair holds the same whole matrices; the split case the maps train.py's Muon takes by default
    assert "output_splits" not in batched.muon.param_groups[0]
    assert any(len(rows) > 1 for rows in split.muon.param_groups[0]["output_splits"])


def test_tiny_run_end_to_end(tmp_path):
    out = tmp_path / "optimizer_speed.jsonl"
    optimizer_speed.main(["--tiny", "--steps", "3", "--warmup", "1", "--out", str(out)])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["case"] for r in records] == ["env", "model", "adam_seed", "adamw", "muon_torch", "muon_batched",
                                                 "muon_split"]
    assert records[1]["hidden_matrices"] == 12
    assert all(r["median_ms"] > 0 and r["steps"] == 3 for r in records[2:])
