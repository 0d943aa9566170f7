"""Generation throughput: ``RecurrentTrainerWrapper(model).generate(prime, length)`` on the seed config.

Seed semantics: ``length`` counts the prime and the call returns only the new tokens. bf16 autocast,
model.eval(), a random prime of 128 tokens, default sampling (filter_thres 0.9). Cases are
"batch x total length": by default batch 1 to 2048 and 8192 tokens and batch 16 to 2048.

tok_per_s counts the tokens of every row (batch * new / seconds); steps_per_s is new tokens per
row per second (the latency view). Timed by synchronize + perf_counter around one generate call,
after one short warm-up generation and a short timed probe. A slow implementation (the seed re-runs
the whole window for every token, ~27 tokens/s) would take minutes per case, so if the probe's
rate predicts more than ``--max-seconds`` the case generates fewer tokens instead and its record
says ``"truncated": true`` with the ``generated_len`` (prime included) actually reached.

    PYTHONPATH=$PWD python bench/generate_speed.py --impl ours --out bench_out/generate_ours.jsonl
    PYTHONPATH=/tmp/seed python bench/generate_speed.py --impl seed --out bench_out/generate_seed.jsonl
    python bench/generate_speed.py --device cpu --tiny         # a smoke test without a GPU
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

import common

import block_recurrent_transformer_pytorch as brt


def timed_generate(wrapper: torch.nn.Module, prime: torch.Tensor, length: int, device: torch.device,
                   **options: Any) -> tuple[float, torch.Tensor]:
    """Seconds of one ``generate(prime, length, **options)`` call, and its output (the new tokens)."""
    common.synchronize(device)
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16):
        out = wrapper.generate(prime, length, **options)
    common.synchronize(device)
    return time.perf_counter() - start, out


def bench_case(cfg: dict[str, Any], batch: int, total_len: int, args: argparse.Namespace,
               device: torch.device) -> dict[str, Any]:
    """Warm up, probe the per-token time, then time one generation (shortened to fit the budget)."""
    torch.manual_seed(0)
    model = brt.BlockRecurrentTransformer(**cfg).to(device).eval()
    wrapper = brt.RecurrentTrainerWrapper(model)
    prime = torch.randint(0, cfg["num_tokens"], (batch, args.prime), device=device)
    new = total_len - args.prime
    options = dict(compile=True) if args.compile else {}

    # the warm-up also compiles (--compile): once per model and batch size, not timed
    timed_generate(wrapper, prime, args.prime + args.warmup_new, device, **options)
    # The probe predicts the full run's time. Early tokens see short windows, so for an uncached
    # implementation it is a slight underestimate; the budget is a guide, not a hard limit.
    probe_s, _ = timed_generate(wrapper, prime, args.prime + args.probe_new, device, **options)
    per_step = probe_s / args.probe_new
    estimate = new * per_step
    truncated = estimate > args.max_seconds
    if truncated:
        new = max(args.probe_new, min(new, int(args.max_seconds / per_step)))

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds, out = timed_generate(wrapper, prime, args.prime + new, device, **options)
    if tuple(out.shape) != (batch, new):
        raise RuntimeError(f"generate returned shape {tuple(out.shape)}, expected {(batch, new)}")
    record: dict[str, Any] = dict(
        new_tokens=new, generated_len=args.prime + new, truncated=truncated, seconds=common.round_sig(seconds),
        tok_per_s=common.round_sig(batch * new / seconds), steps_per_s=common.round_sig(new / seconds),
        ms_per_step=common.round_sig(1e3 * seconds / new), estimated_full_s=common.round_sig(estimate),
    )
    if device.type == "cuda":
        record["peak_gib"] = common.peak_gib(device)
    return record


def main() -> None:
    parser = common.base_parser(__doc__)
    parser.add_argument("--cases", default=None, help="comma-separated batch x total length (default 1x2048,1x8192,16x2048)")
    parser.add_argument("--prime", type=int, default=None, help="prime length (default 128; 8 with --tiny)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="time budget of one timed generation")
    parser.add_argument("--warmup-new", type=int, default=16, help="new tokens of the warm-up generation")
    parser.add_argument("--probe-new", type=int, default=32, help="new tokens of the timed probe")
    parser.add_argument("--compile", action="store_true",
                        help="generate(..., compile=True): this package's compiled decoding step (not in the seed)")
    args = parser.parse_args()

    cfg = common.TINY_CONFIG if args.tiny else common.SEED_CONFIG
    args.cases = args.cases or ("1x160,4x96" if args.tiny else "1x2048,1x8192,16x2048")
    args.prime = args.prime or (8 if args.tiny else 128)
    device = common.pick_device(args.device)
    common.setup_precision()
    emit = common.JsonlWriter(args.out)
    emit(dict(bench="generate", **common.env_record(args.impl, device, brt)))

    for shape in args.cases.split(","):
        batch, total_len = common.parse_shape(shape)
        record: dict[str, Any] = dict(bench="generate", case=f"gen_b{batch}_to{total_len}", impl=args.impl,
                                      batch=batch, prime=args.prime, total_len=total_len, compiled=args.compile)
        try:
            if total_len <= args.prime + args.probe_new:
                raise ValueError(f"total length {total_len} must exceed prime + probe ({args.prime + args.probe_new})")
            record.update(bench_case(cfg, batch, total_len, args, device))
        except Exception as error:  # report and go on with the other cases
            record["error"] = common.describe_error(error)
        common.free_memory(device)
        emit(record)


if __name__ == "__main__":
    main()
