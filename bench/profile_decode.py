"""Where a decoding step's time goes: the cached decoder's one-token step (replayed from a CUDA
graph) against the whole sampling loop, with a kernel breakdown of the replayed step.

    PYTHONPATH=$PWD python bench/profile_decode.py --batch 1
    PYTHONPATH=$PWD python bench/profile_decode.py --batch 16 --compile

Seed config, bf16 autocast, eval mode, a random prime of 128 tokens. Prints, as one JSON line:
ms per token of the replayed step alone (``CachedDecoder.append`` of one token, CUDA events), ms
per token of the full loop (``generate``: sampling and the Python loop included; wall clock), and
the kernel count and kernel time of one replayed step; then the 20 kernels that take longest over
``--steps`` replays. ``--compile`` decodes with ``compile=True`` (the step compiled before its
capture; the compilation is in ``setup_s``). CUDA only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

import common

import block_recurrent_transformer_pytorch as brt
from block_recurrent_transformer_pytorch.generation import start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=64, help="replayed steps timed and profiled")
    parser.add_argument("--compile", action="store_true", help="decode with compile=True")
    args = parser.parse_args()
    width = common.SEED_CONFIG["block_width"]
    if not 1 <= args.steps or 128 + 1 + 2 * args.steps > width - 1:
        parser.error(f"--steps must be in 1..{(width - 1 - 129) // 2} (every timed step a replay inside "
                     f"the first block), got {args.steps}")

    device = torch.device("cuda")
    common.setup_precision()
    torch.manual_seed(0)
    model = brt.BlockRecurrentTransformer(**common.SEED_CONFIG).to(device).eval()
    prime = torch.randint(0, 256, (args.batch, 128), device=device)
    token = prime[:, -1:]

    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        begin = time.perf_counter()
        decoder, _ = start(model, prime, compile=args.compile)
        decoder.append(token)  # the first one-token step captures the graph (and compiles)
        common.synchronize(device)
        setup_s = time.perf_counter() - begin
        # every step below is a replay: the block does not end (checked above)
        step_ms = statistics.median(1e3 * t for t in common.time_each(lambda: decoder.append(token), args.steps, device))
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(args.steps):
                decoder.append(token)
            common.synchronize(device)
        totals, lines = common.kernel_summary(prof, top=20)

        model.generate(prime, 512, compile=args.compile)  # warm-up
        common.synchronize(device)
        begin = time.perf_counter()
        model.generate(prime, 512, compile=args.compile)  # 384 new tokens: the rest of the first block
        common.synchronize(device)
        loop_ms = 1e3 * (time.perf_counter() - begin) / 384

    per_step = dict(kernel_ms=round(totals["kernel_ms"] / args.steps, 4), kernels=totals["kernels"] / args.steps,
                    categories_ms={k: round(v / args.steps, 4) for k, v in totals["categories_ms"].items()})
    print(json.dumps(dict(batch=args.batch, compiled=args.compile, setup_s=round(setup_s, 2),
                          replay_ms_per_token=round(step_ms, 4), generate_ms_per_token=round(loop_ms, 4),
                          replayed_step=per_step, torch=torch.__version__, gpu=torch.cuda.get_device_name())))
    print(f"kernels over {args.steps} replayed steps:")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
