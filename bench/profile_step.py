"""Where a fast training step's GPU time goes: a kernel-time breakdown of one step with TrainStep
(each segment's forward + backward replayed from a CUDA graph), the model compiled by default.

    PYTHONPATH=$PWD python bench/profile_step.py --cfg seed --shape 16x2048
    PYTHONPATH=$PWD python bench/profile_step.py --cfg large --shape 64x2048 --no-compile
    PYTHONPATH=$PWD python bench/profile_step.py --cfg long-documents    # train.py's --preset long-documents model
    PYTHONPATH=$PWD python bench/profile_step.py --cfg long-documents --documents --steps 20 --profile-steps 10
    PYTHONPATH=$PWD python bench/profile_step.py --cfg long-documents --documents --optimizer muon   # as quality.py trains

By default each step starts afresh (no memories: the first block of every segment attends itself
alone). ``--documents`` trains as bench/quality.py and train.py --documents do: labels, memories and
states carried from step to step, and rows starting a new document at ``--reset-rate`` (their
memories hidden for a block), so the step is the one training runs. The optimizer is fused AdamW
unless ``--optimizer muon``: then bench/quality.py's (train.py's BatchedMuon at 3e-3 for the hidden
matrices, each fused projection's maps apart, and AdamW at 6e-4 for the rest), whose kernels are
then part of the step's time.

Prints the warm-up time (compilation included), the timed steps, then one JSON line (total kernel
time over the profiled steps, kernel count, time per category: matmul, attention, fused Triton
kernels, other; by kernel name, see ``common.kernel_category``) and the 30 kernels that take
longest. CUDA only.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch
from torch.profiler import ProfilerActivity, profile

import common
from quality import PRESETS, make_optimizers  # the model configs and optimizers of bench/quality.py

import block_recurrent_transformer_pytorch as brt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cfg", choices=tuple(PRESETS), default="seed")
    parser.add_argument("--shape", default="16x2048", help="batch x tokens")
    parser.add_argument("--no-compile", action="store_true", help="profile the eager model's graphs")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a model setting over --cfg's (e.g. block_width=1024; repeatable)")
    parser.add_argument("--documents", action="store_true",
                        help="labels, memories and states carried, rows starting documents at --reset-rate")
    parser.add_argument("--reset-rate", type=float, default=0.061,
                        help="--documents: the chance a row starts a new document at a segment (0.061: linux_c read "
                             "by bench/quality.py at 16 x 2048, 0.98 rows a step; bench/document_mix.py)")
    parser.add_argument("--optimizer", choices=("adamw", "muon"), default="adamw",
                        help="adamw: fused AdamW; muon: bench/quality.py's Muon 3e-3 per map, AdamW 6e-4 for the rest")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--profile-steps", type=int, default=1, help="steps under the profiler (totals over them)")
    args = parser.parse_args()
    if not 0 <= args.reset_rate <= 1:
        parser.error(f"--reset-rate must be a probability in [0, 1], got {args.reset_rate}")

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
    if args.optimizer == "muon":
        optimizers = make_optimizers(model, argparse.Namespace(optimizer="muon", lr=6e-4, muon_lr=3e-3, weight_decay=0.1,
                                                               muon_split_qkv=True), device)
    else:
        optimizers = [torch.optim.AdamW(params, lr=1e-4, fused=True)]
    train_step = brt.TrainStep(wrapper)
    x = torch.randint(0, cfg["num_tokens"], (batch, seq + 1))
    if args.documents:
        inputs, labels = x[:, :-1].contiguous().pin_memory(), x[:, 1:].contiguous().pin_memory()
    else:
        x = x.pin_memory()
    segments = seq // model.config.max_seq_len
    resets = torch.Generator().manual_seed(0)
    memories = states = None  # what the last step ended with (--documents)
    started = 0  # documents the rows started (--documents)

    def step() -> None:
        nonlocal memories, states, started
        if args.documents:
            reset = torch.rand(batch, segments, generator=resets) < args.reset_rate
            started += int(reset.sum())
            _, memories, states = train_step(inputs, labels=labels, reset=reset, xl_memories=memories, states=states,
                                             return_memories_and_states=True)
        else:
            train_step(x)
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=False)

    start = time.perf_counter()
    if args.documents:  # every graph a documents step may need (the masked one among them), as quality.py
        train_step.warm_up(batch, documents=True)
    for _ in range(4):
        step()
    common.synchronize(device)
    print(f"warm-up {time.perf_counter() - start:.1f} s")
    times = common.time_each(step, args.steps, device)
    print("ms per step", [round(t * 1e3, 2) for t in times], f"mean {sum(times) / len(times) * 1e3:.2f}")

    started = 0
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(args.profile_steps):
            step()
        common.synchronize(device)
    totals, lines = common.kernel_summary(prof)
    print(json.dumps(dict(cfg=args.cfg, settings=args.set, shape=args.shape, optimizer=args.optimizer,
                          compiled=not args.no_compile,
                          documents=args.documents, reset_rate=args.reset_rate if args.documents else None,
                          profile_steps=args.profile_steps, documents_started=started if args.documents else None,
                          **totals)))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
