"""Where a fast training step's GPU time goes: a kernel-time breakdown of one step with TrainStep
(each segment's forward + backward replayed from a CUDA graph), the model compiled by default.

    PYTHONPATH=$PWD python bench/profile_step.py --cfg seed --shape 16x2048
    PYTHONPATH=$PWD python bench/profile_step.py --cfg large --shape 64x2048 --no-compile
    PYTHONPATH=$PWD python bench/profile_step.py --cfg long-documents    # train.py's --preset long-documents model

Prints the warm-up time (compilation included), 5 timed steps, then one JSON line (total kernel
time, kernel count, time per category: matmul, attention, fused Triton kernels, other; by kernel
name, see ``common.kernel_category``) and the 30 kernels that take longest. CUDA only.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch
from torch.profiler import ProfilerActivity, profile

import common
from quality import PRESETS  # the model configs of bench/quality.py: seed, large, tiny, long-documents

import block_recurrent_transformer_pytorch as brt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg", choices=tuple(PRESETS), default="seed")
    parser.add_argument("--shape", default="16x2048", help="batch x tokens")
    parser.add_argument("--no-compile", action="store_true", help="profile the eager model's graphs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a model setting over --cfg's (e.g. block_width=1024; repeatable)")
    args = parser.parse_args()

    cfg = {**PRESETS[args.cfg], **common.parse_settings(args.set)}
    batch, seq = common.parse_shape(args.shape)
    device = torch.device("cuda")
    common.setup_precision()
    torch.manual_seed(0)
    random.seed(0)
    model = brt.BlockRecurrentTransformer(**cfg).to(device)
    wrapper = brt.RecurrentTrainerWrapper(model, 0.1, 0.1)
    if not args.no_compile:
        model.compile(fullgraph=True, dynamic=False)
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)
    train_step = brt.TrainStep(wrapper)
    x = torch.randint(0, cfg["num_tokens"], (batch, seq + 1)).pin_memory()

    def step() -> None:
        train_step(x)
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)

    start = time.perf_counter()
    for _ in range(4):
        step()
    common.synchronize(device)
    print(f"warm-up {time.perf_counter() - start:.1f} s")
    print("ms per step", [round(t * 1e3, 2) for t in common.time_each(step, 5, device)])

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        common.synchronize(device)
    totals, lines = common.kernel_summary(prof)
    print(json.dumps(dict(cfg=args.cfg, settings=args.set, shape=args.shape, compiled=not args.no_compile, **totals)))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
