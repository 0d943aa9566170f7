"""What one optimizer step costs train.py's long-documents model: AdamW, and Muon for the hidden matrices.

An eager optimizer step runs after TrainStep's graphs replay each segment's forward and backward, so its
kernel launches add to every training step. Cases, each on the same model (train.py's --preset
long-documents, 19.93M parameters, fp32 weights) with the same random gradients:

  adam_seed       torch.optim.Adam with its defaults over every parameter: the seed's train.py's optimizer
  adamw           train.py's AdamW (fused on CUDA; weight decay on linear and embedding weights)
  muon_torch      MuonAdamW with torch.optim.Muon for the 28 hidden matrices (one matrix at a time, whole)
  muon_batched    MuonAdamW with BatchedMuon on the same whole matrices (--no-muon-split-qkv: Newton-Schulz
                  batched by shape), the same update as muon_torch's
  muon_split      MuonAdamW with BatchedMuon taking each fused projection's queries, keys and values apart
                  (train.py's --optimizer muon since 2026-12-02: 42 blocks in 5 shapes)

Each case, its optimizer built alone: --warmup steps, then the time of each of --steps steps (CUDA events,
no host sync between steps); one JSON line per case with the median and the spread in milliseconds, and the
peak memory (the model, its gradients and that case's optimizer state).

    python bench/optimizer_speed.py --out bench_out/optimizer_speed.jsonl
    python bench/optimizer_speed.py --device cpu --tiny     # a smoke test without a GPU
"""

from __future__ import annotations

import os
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import block_recurrent_transformer_pytorch as brt  # noqa: E402
from training.config import PRESETS, TrainConfig  # noqa: E402
from training.model import build_model  # noqa: E402
from training.optimizer import MuonAdamW, build_optimizer, param_groups  # noqa: E402

TINY = dict(dim=64, depth=2, heads=2, dim_head=32, max_seq_len=64, block_width=32, num_state_vectors=16,
            recurrent_layers=(2,), kv_heads=1, rotary_dim=16)


def optimizers(model: nn.Module, cfg: TrainConfig,
               device: torch.device) -> dict[str, Callable[[], torch.optim.Optimizer]]:
    """Each case's optimizer over model's parameters, built when called (one at a time: each case's
    peak memory holds its own state alone)."""
    whole = replace(cfg, muon_split_qkv=False)

    def torch_muon() -> torch.optim.Optimizer:
        batched = build_optimizer(model, whole, device)  # its AdamW, and BatchedMuon's settings for torch's Muon
        matrices = batched.muon.param_groups[0]["params"]
        return MuonAdamW(batched.adamw, torch.optim.Muon(matrices, **batched.muon.defaults))

    return {"adam_seed": lambda: torch.optim.Adam(model.parameters(), lr=cfg.learning_rate),
            "adamw": lambda: build_optimizer(model, replace(cfg, optimizer="adamw"), device),
            "muon_torch": torch_muon,
            "muon_batched": lambda: build_optimizer(model, whole, device),
            "muon_split": lambda: build_optimizer(model, replace(cfg, muon_split_qkv=True), device)}


def main(argv: list[str] | None = None) -> None:
    parser = common.base_parser(__doc__)
    parser.add_argument("--steps", type=int, default=50, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per case first")
    args = parser.parse_args(argv)
    device = common.pick_device("cpu" if args.tiny and args.device is None else args.device)
    common.setup_precision()
    write = common.JsonlWriter(args.out)
    write(common.env_record(args.impl, device, brt))
    cfg = TrainConfig(**{**PRESETS["long-documents"], **(TINY if args.tiny else {}), "doc_separator": 0})
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    matrices = param_groups(model, cfg.weight_decay, muon=True)[1]
    write(dict(case="model", params=sum(p.numel() for p in model.parameters()), hidden_matrices=len(matrices),
               shapes=sorted({tuple(p.shape) for p in matrices})))
    for name, build in optimizers(model, cfg, device).items():
        common.free_memory(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        optimizer = build()
        for _ in range(args.warmup):
            optimizer.step()
        times = sorted(common.time_each(optimizer.step, args.steps, device))
        write(dict(case=name, steps=args.steps, median_ms=round(1e3 * statistics.median(times), 3),
                   p10_ms=round(1e3 * times[len(times) // 10], 3), p90_ms=round(1e3 * times[(9 * len(times)) // 10], 3),
                   peak_gib=common.peak_gib(device)))
        del optimizer


if __name__ == "__main__":
    main()
