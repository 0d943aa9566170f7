"""FSDP check of train.py: its sharded gradients equal single-process gradients; tokens/s, MFU and peak
memory on N processes against 1.

    torchrun --nproc_per_node 2 bench/fsdp_check.py --out bench_out/fsdp_check.jsonl       # 2 GPUs (nccl)
    torchrun --nproc_per_node 2 bench/fsdp_check.py --device cpu --tiny                   # CPU (gloo)
    torchrun --nproc_per_node 2 bench/fsdp_check.py --device cpu --tiny --perturb-rank1   # must fail

bench/ddp_check.py with train.py's --fsdp on: the same patched run of train.py's own loop, the same
flags (--rtol, --window, --no-speed, any train.py flag such as --activation-checkpointing), the
same record and table, labelled "fsdp_check". The gradient check gathers each parameter's sharded
gradient (a DTensor) whole after one fp32 step and compares it with the gradient one process
computes for the same global batch. The speed part runs train.py on rank 0 alone first (one
process has nothing to shard: the eager loop, unsharded, with the same flags), then sharded on all
N ranks. See ddp_check.py's docstring for the details.
"""

from __future__ import annotations

import sys
from typing import Optional

import ddp_check  # bench/, first on the path of a script run from there


def main(argv: Optional[list[str]] = None) -> int:
    """bench/ddp_check.py's main with --fsdp added to the train.py flags."""
    return ddp_check.main([*(sys.argv[1:] if argv is None else argv), "--fsdp"], bench="fsdp_check")


if __name__ == "__main__":
    sys.exit(main())
