"""bench/muon_split.py: each fused projection's maps, their updates whole and apart, on a corpus of the test's own."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import muon_split  # noqa: E402


def test_its_updates_whole_and_apart_are_batched_muons_first_steps():
    """The script's figures are the optimizer's: its update of a whole fused matrix is BatchedMuon's first step
    at rate 1 (no momentum yet, no weight decay, no Nesterov) without output_splits, and its updates of the
    parts, stacked, are the same step with them. The whole matrix takes the same kernels both ways and agrees
    exactly; the parts are orthogonalised one by one here and the two of one shape as a batch there, whose bf16
    matmuls may round apart on some CPUs (0.18% of the update's norm on an AVX-512 one), far below the 33% by
    which the update of the whole differs from that of the parts."""
    torch.manual_seed(0)
    grad, rows = torch.randn(96, 32), (64, 16, 16)
    whole, apart = muon_split.update(grad), torch.cat([muon_split.update(part) for part in grad.split(rows)])
    assert (whole - apart).norm() / apart.norm() > 0.2  # what telling the two apart rests on
    settings = dict(lr=1.0, momentum=0.0, nesterov=False, weight_decay=0.0, adjust_lr_fn="match_rms_adamw")
    for splits, expected, within in ((None, whole, 0.0), ([rows], apart, 1e-2)):
        weight = torch.nn.Parameter(torch.zeros(96, 32))
        weight.grad = grad.clone()
        group = {"params": [weight]} if splits is None else {"params": [weight], "output_splits": splits}
        muon_split.train.BatchedMuon([group], **settings).step()
        assert (-weight.detach() - expected).norm() / expected.norm() <= within, splits


def test_it_reports_every_fused_projection_of_the_preset(tmp_path, capsys):
    text = b"int main(void) { return 0; }\n" * 200
    (tmp_path / "code.train.bin").write_bytes(text)
    muon_split.main(["--corpus", "code", "--corpora", str(tmp_path), "--rows", "1"])
    lines = capsys.readouterr().out.splitlines()[1:]
    parts = {line.split()[0]: line.count("grad ") for line in lines}
    assert parts == {**{f"layers.{i}.0.to_qkv.weight": 3 for i in range(6)},
                     "states.0.to_write_q.weight": 2, "states.0.to_kv.weight": 2}
