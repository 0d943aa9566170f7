"""How Muon's update divides among the maps of a fused projection (queries, keys and values in one to_qkv),
orthogonalised whole (--no-muon-split-qkv) against each map apart (--muon-split-qkv, as for separate linear layers
such as x-transformers' to_q, to_k, to_v): on one gradient of the long-documents model at its initial weights.

    python bench/muon_split.py --corpus linux_c

For every matrix with output_splits it prints each map's gradient norm and the per-element RMS of its update
both ways, at rate 1 (Muon's rate adjusted to match AdamW's RMS: 0.2 over a whole matrix). A map whose gradient
is small beside the others' gets a small share of a whole matrix's update. CPU; about a minute.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import train  # noqa: E402
from training.optimizer import adjusted_lr, hidden_matrices, orthogonalize, output_splits  # noqa: E402

MUON_DEFAULTS = inspect.signature(torch.optim.Muon).parameters  # the Newton-Schulz settings train.py's Muon runs


def update(grad: torch.Tensor) -> torch.Tensor:
    """Muon's update of one matrix at rate 1 (match_rms_adamw), from its gradient alone (no momentum yet)."""
    ortho = orthogonalize(grad[None], MUON_DEFAULTS["ns_coefficients"].default, MUON_DEFAULTS["ns_steps"].default,
                          MUON_DEFAULTS["eps"].default)
    return ortho[0].float() * adjusted_lr(1.0, "match_rms_adamw", grad.shape)


def rms(t: torch.Tensor) -> float:
    """Root mean square of the elements."""
    return float(t.pow(2).mean().sqrt())


def main(argv: list[str] | None = None) -> None:
    """Print each fused projection's maps: gradient norm and update RMS, the matrix whole -> each map apart."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="linux_c", help="a corpus of bench/corpora.py (its train split's start)")
    parser.add_argument("--corpora", default=str(Path(__file__).resolve().parents[1] / ".corpora"))
    parser.add_argument("--rows", type=int, default=8, help="rows of 2048 bytes in the batch")
    parser.add_argument("--seed", type=int, default=0, help="the initial weights' seed")
    args = parser.parse_args(argv)

    cfg = train.TrainConfig(**{**train.PRESETS["long-documents"], "doc_separator": 0})
    torch.manual_seed(args.seed)
    model = train.build_model(cfg)
    data = (Path(args.corpora) / f"{args.corpus}.train.bin").read_bytes()[:args.rows * (cfg.seq_len + 1)]
    x = torch.tensor(list(data), dtype=torch.long).view(args.rows, cfg.seq_len + 1)
    train.RecurrentTrainerWrapper(model)(x).backward()

    names = {id(p): name for name, p in model.named_parameters()}
    matrices = hidden_matrices(model)
    print("per-element RMS of Muon's update at rate 1: each map of a fused matrix, whole -> apart")
    for p, rows in zip(matrices, output_splits(model, matrices)):
        if len(rows) == 1:
            continue
        grad = p.grad.float()
        whole = update(grad).split(rows)
        parts = [(float(g.norm()), rms(w), rms(update(g))) for g, w in zip(grad.split(rows), whole)]
        print(f"{names[id(p)]:28s} " + " | ".join(f"grad {n:.3g}: {w:.3f} -> {a:.3f}" for n, w, a in parts))


if __name__ == "__main__":
    main()
