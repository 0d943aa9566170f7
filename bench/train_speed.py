"""Training throughput of a Block-Recurrent Transformer: tokens/s, peak memory, model-FLOP utilisation.

One step = RecurrentTrainerWrapper(model, 0.1, 0.1) forward over (batch, seq + 1) tokens (seq / max_seq_len
segments, memories and states carried), backward, grad-norm clipping at 0.5, AdamW; bf16 autocast
over fp32 weights. Tokens/s is batch * seq over the median step time; utilisation (MFU) is the
model FLOPs per step (``common.train_flops_per_token``, formula in common.py) per second over the
card's bf16 matmul rate measured in the same run (8192^3 matmul).

The package is whatever ``import block_recurrent_transformer_pytorch`` resolves to, so with the seed
package (0.4.4) first on PYTHONPATH the same script measures the seed:

    PYTHONPATH=$PWD python bench/train_speed.py --impl ours --out bench_out/train_ours.jsonl
    PYTHONPATH=/tmp/seed python bench/train_speed.py --impl seed --out bench_out/train_seed.jsonl
    python bench/train_speed.py --device cpu --tiny          # a smoke test without a GPU

Prints one JSON line per case (and an "env" line first); a case that fails (e.g. out of memory)
reports its error and the others still run.
"""

from __future__ import annotations

import argparse
import random
import statistics
from typing import Any

import torch

import common

import block_recurrent_transformer_pytorch as brt


def cases(args: argparse.Namespace) -> list[tuple[str, dict[str, Any], int, int]]:
    """(name, config, batch, seq) of every case to run."""
    if args.tiny:
        return [("tiny_b2x128", common.TINY_CONFIG, 2, 128), ("tiny_b4x64", common.TINY_CONFIG, 4, 64)]
    large_batch, large_seq = common.parse_shape(args.large_shape)
    return [
        ("seed_b4x2048", common.SEED_CONFIG, 4, 2048),
        ("seed_b16x2048", common.SEED_CONFIG, 16, 2048),
        ("seed_b4x8192", common.SEED_CONFIG, 4, 8192),
        (f"large_b{large_batch}x{large_seq}", common.LARGE_CONFIG, large_batch, large_seq),
    ]


def bench_case(cfg: dict[str, Any], batch: int, seq: int, device: torch.device, warmup: int,
               steps: int, compile_model: bool = False, cuda_graph: bool = False) -> dict[str, Any]:
    """Build a fresh model and optimiser, warm up, then time ``steps`` training steps.

    ``compile_model``: torch.compile the model (one graph per segment shape).
    ``cuda_graph``: this package's ``TrainStep`` (each segment's forward + backward replayed from a
    CUDA graph), tokens passed from pinned CPU memory as a training loop would.
    Either one also switches to fused AdamW (one kernel for the whole update).
    """
    torch.manual_seed(0)
    random.seed(0)  # both packages draw memory/state dropout from Python's `random`: same pattern
    model = brt.BlockRecurrentTransformer(**cfg).to(device)
    wrapper = brt.RecurrentTrainerWrapper(model, 0.1, 0.1)
    if compile_model:
        model.compile(fullgraph=True, dynamic=False)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4, fused=(compile_model or cuda_graph) or None)
    x = torch.randint(0, cfg["num_tokens"], (batch, seq + 1), device=device)
    losses: list[torch.Tensor] = []

    if cuda_graph:
        train_step = brt.TrainStep(wrapper, amp_dtype=torch.bfloat16)
        x = x.cpu().pin_memory()

        def step() -> None:
            losses.append(train_step(x))
            torch.nn.utils.clip_grad_norm_(params, 0.5)
            opt.step()
            opt.zero_grad(set_to_none=False)  # keep TrainStep's gradient buffers
    else:
        def step() -> None:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = wrapper(x)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 0.5)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.detach())  # no .item(): a host sync per step would hide launch overhead

    if device.type == "cuda":
        # peak over steps includes weights, grads and AdamW moments, as a user would see it
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(warmup):
        step()
    common.synchronize(device)
    times = common.time_each(step, steps, device)
    seconds = statistics.median(times)
    record: dict[str, Any] = dict(
        s_per_step=common.round_sig(seconds), s_per_step_min=common.round_sig(min(times)),
        s_per_step_max=common.round_sig(max(times)), tok_per_s=round(batch * seq / seconds),
        params=sum(p.numel() for p in model.parameters()), loss=round(losses[-1].item(), 4),
    )
    if device.type == "cuda":
        record["peak_gib"] = common.peak_gib(device)
    return record


def main() -> None:
    parser = common.base_parser(__doc__)
    parser.add_argument("--large-shape", default="16x2048", help="batch x tokens for the large model")
    parser.add_argument("--cases", default="", help="comma-separated substrings: run only matching cases")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--matmul-n", type=int, default=None, help="roofline matmul size (8192 on GPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model, fused AdamW")
    parser.add_argument("--cuda-graph", action="store_true", help="TrainStep: segments replayed from CUDA graphs, fused AdamW")
    parser.add_argument("--allow-cudnn", action="store_true",
                        help="ours: let SDPA pick its cuDNN backend too (torch's first choice on Hopper; our "
                             "attention leaves it out, see attention.sdpa_backends): measures what that costs")
    args = parser.parse_args()
    if args.allow_cudnn:
        from torch.nn.attention import SDPBackend

        from block_recurrent_transformer_pytorch import attention

        every_backend = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                         SDPBackend.MATH]
        attention.sdpa_backends = lambda: every_backend

    device = common.pick_device(args.device)
    common.setup_precision()
    emit = common.JsonlWriter(args.out)

    env = common.env_record(args.impl, device, brt)
    matmul_n = args.matmul_n or (8192 if device.type == "cuda" else 1024)
    env["matmul_n"] = matmul_n
    env["matmul_tflops"] = peak = common.round_sig(common.matmul_tflops(device, matmul_n))
    emit(dict(bench="train", **env))

    wanted = [s for s in args.cases.split(",") if s]
    for name, cfg, batch, seq in cases(args):
        if wanted and not any(s in name for s in wanted):
            continue
        record: dict[str, Any] = dict(bench="train", case=name, impl=args.impl, batch=batch, seq=seq,
                                      allow_cudnn=args.allow_cudnn,
                                      warmup=args.warmup, steps=args.steps, config={k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()})
        try:
            record.update(bench_case(cfg, batch, seq, device, args.warmup, args.steps, args.compile, args.cuda_graph))
            flops = common.train_flops_per_token(cfg)
            achieved = flops * record["tok_per_s"] / 1e12
            record.update(model_flops_per_token=round(flops), achieved_tflops=common.round_sig(achieved),
                          matmul_tflops=peak, mfu=common.round_sig(achieved / peak))
        except Exception as error:  # report and go on: one OOM must not lose the other cases
            record["error"] = common.describe_error(error)
        common.free_memory(device)
        emit(record)


if __name__ == "__main__":
    main()
