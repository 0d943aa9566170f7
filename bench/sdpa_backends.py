"""Which SDPA backend serves each attention call of a training step, and does the step run? (issue 12)

Runs the issue's repro (the passkey model with a kNN layer, three 512-token segments with memories
carried, bf16 autocast, forward and backward) and the same model without the kNN layer. Each
F.scaled_dot_product_attention call is recorded with its shapes and two backend choices:
``default``, what SDPA picks with every backend enabled (torch's own priority), and ``ours``, what it
picks inside our call (``attention.sdpa_backends()``, cuDNN left out). Then each batch size is
trained for a few steps, in a fresh process, with our backends and, with ``--with-cudnn``, with
cuDNN allowed as before the fix (the failure the issue reports).

    PYTHONPATH=$PWD python bench/sdpa_backends.py --batches 64,160 --with-cudnn --out bench_out/sdpa_backends.jsonl
    python bench/sdpa_backends.py --device cpu --tiny     # a smoke run: choices on a CPU, batch 2
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import common

from block_recurrent_transformer_pytorch import BlockRecurrentTransformer, RecurrentTrainerWrapper
from block_recurrent_transformer_pytorch import attention

PASSKEY_MODEL = dict(num_tokens=256, dim=384, depth=4, heads=6, dim_head=64, max_seq_len=512, block_width=256,
                     num_state_vectors=128, recurrent_layers=(3,), use_flash_attn=True)
KNN = dict(knn_layers=(4,), knn_memory_size=262_144, knn_top_k=32)
TINY_MODEL = dict(PASSKEY_MODEL, dim=64, heads=2, dim_head=32, max_seq_len=64, block_width=32, num_state_vectors=8)
TINY_KNN = dict(KNN, knn_memory_size=1024)
ALL_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH,
                SDPBackend.CUDNN_ATTENTION]


def choice(q, k, v, kwargs: dict[str, Any]) -> str:
    """The backend SDPA picks for these arguments under the enabled backends."""
    picked = torch._fused_sdp_choice(q, k, v, attn_mask=kwargs.get("attn_mask"), dropout_p=0.0,
                                     is_causal=kwargs.get("is_causal", False), scale=kwargs.get("scale"),
                                     enable_gqa=kwargs.get("enable_gqa", False))
    return SDPBackend(picked).name


def record_choices(model_kwargs: dict[str, Any], batch: int, segments: int, device: torch.device) -> list[dict]:
    """One forward and backward of ``segments`` segments; a record per distinct SDPA call."""
    calls: collections.Counter = collections.Counter()
    original = F.scaled_dot_product_attention

    def recording(q, k, v, **kwargs):
        ours = choice(q, k, v, kwargs)
        with sdpa_kernel(ALL_BACKENDS):
            default = choice(q, k, v, kwargs)
        mask = kwargs.get("attn_mask")
        key = (tuple(q.shape), tuple(k.shape), str(q.dtype), kwargs.get("is_causal", False),
               None if mask is None else tuple(mask.shape), kwargs.get("enable_gqa", False), q.is_contiguous(),
               default, ours)
        calls[key] += 1
        return original(q, k, v, **kwargs)

    model = BlockRecurrentTransformer(**model_kwargs).to(device)
    wrapper = RecurrentTrainerWrapper(model)
    x = torch.randint(0, 256, (batch, segments * model.max_seq_len + 1), device=device)
    F.scaled_dot_product_attention = recording
    try:
        with bf16_autocast(device):
            loss = wrapper(x)
        loss.backward()
    finally:
        F.scaled_dot_product_attention = original
    names = ("q", "k", "dtype", "is_causal", "mask", "enable_gqa", "q_contiguous", "default", "ours")
    return [dict(zip(names, key), calls=n) for key, n in calls.items()]


def bf16_autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA, as the issue's repro; off on a CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def train_steps(model_kwargs: dict[str, Any], batch: int, steps: int, segments: int, device: torch.device,
                with_cudnn: bool) -> dict[str, Any]:
    """``steps`` AdamW steps at ``batch``; with_cudnn: SDPA may use cuDNN (the code before the fix)."""
    if with_cudnn:
        attention.sdpa_backends = lambda: ALL_BACKENDS
    torch.manual_seed(0)
    model = BlockRecurrentTransformer(**model_kwargs).to(device)
    wrapper = RecurrentTrainerWrapper(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    x = torch.randint(0, 256, (batch, segments * model.max_seq_len + 1), device=device)
    losses = []
    for _ in range(steps):
        with bf16_autocast(device):
            loss = wrapper(x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss))
    return dict(losses=[round(v, 4) for v in losses], peak_gib=common.peak_gib(device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="64,160", help="batch sizes to train (comma-separated)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--segments", type=int, default=3)
    parser.add_argument("--with-cudnn", action="store_true", help="also train with cuDNN allowed (before the fix)")
    parser.add_argument("--device")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--out", default="bench_out/sdpa_backends.jsonl")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # "<knn|plain>:<batch>:<0|1 with cuDNN>"
    args = parser.parse_args()
    device = common.pick_device(args.device)
    base, knn = (TINY_MODEL, TINY_KNN) if args.tiny else (PASSKEY_MODEL, KNN)
    models = {"plain": base, "knn": {**base, **knn}}

    if args.child:  # one training run, in its own process: a CUDA error poisons the process
        name, batch, with_cudnn = args.child.split(":")
        try:
            result = train_steps(models[name], int(batch), args.steps, args.segments, device, with_cudnn == "1")
        except Exception as error:  # noqa: BLE001 - the failure is the measurement
            result = dict(error=common.describe_error(error))
        print("RESULT", json.dumps(result))
        return

    out = common.JsonlWriter(args.out)
    out(dict(common.env_record("ours", device, torch), what="sdpa_backends"))
    for name, kwargs in models.items():
        for record in record_choices(kwargs, 2 if args.tiny else 8, args.segments, device):
            out(dict(record, what="choice", model=name))
    batches = [int(b) for b in args.batches.split(",")] if not args.tiny else [2]
    for name in models:
        for batch in batches:
            for with_cudnn in ((False, True) if args.with_cudnn else (False,)):
                cmd = [sys.executable, __file__, "--child", f"{name}:{batch}:{int(with_cudnn)}",
                       "--steps", str(args.steps), "--segments", str(args.segments)]
                cmd += ["--device", str(device)] + (["--tiny"] if args.tiny else [])
                run = subprocess.run(cmd, capture_output=True, text=True)
                lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
                result = json.loads(lines[-1][7:]) if lines else dict(error=(run.stderr or "no output")[-2000:])
                out(dict(result, what="train", model=name, batch=batch, with_cudnn=with_cudnn))


if __name__ == "__main__":
    main()
