"""Shared pieces of the benches: configs, the model-FLOP count, the matmul roofline, timing, output.

The benches import ``block_recurrent_transformer_pytorch`` from wherever PYTHONPATH puts it, so the
same scripts measure this repository and the seed package (0.4.4) side by side. Only the seed's API
is used: the constructor arguments below, ``RecurrentTrainerWrapper(model, p_mem, p_state)``, its
forward (mean loss) and ``.generate(prime, length)``.

Model FLOPs per token (forward; training = 3x forward, backward costing two forwards). Only matmuls
count (norms, rotary, softmax, gates are elementwise). With d = dim, L = depth, H = heads,
dh = dim_head, g = kv_heads (1 in the seed: one shared key/value head), V = num_tokens,
W = block_width, S = num_state_vectors, f = int(d * ff_mult * 2/3) (GEGLU hidden width),
r_l = state reads at layer l, R = recurrent (writing) layers:

  projections  2 * [ L * (d*H*dh + d*2*g*dh + 3*d*f)        q, k/v, GEGLU in (2f) and out
                     + sum_l (1 + r_l)*H*dh*d               output projection, widened by state reads
                     + sum_l r_l * d*H*dh                   token -> state read queries
                     + d*V ]                                logits
  attention    L * 2*2*H*dh * (M + (W+1)/2)                 QK^T and AV; each query sees the memory
                                                            M = W (XL) + W/2 if compressed memory is on,
                                                            and on average (W+1)/2 keys of its block
  state read   sum_l r_l * 2*2*H*dh*S                       token -> state cross-attention
  state write  R * [ 2*S*(d*2*g*dh + d*2*H*dh + 2*H*dh*d)   state k/v, queries (self, cross), update
                     + 2*2*H*dh*S*S                         state self-attention
                     + 2*2*H*dh*S*W                         state -> block cross-attention
                     (+ 2*S*2*d*d for the "lstm" gate) ] / W    once per block, shared by W tokens
  compression  4*L*g*dh*dh                                  strided conv of evicted blocks (if on)

The memory is counted full (steady state); the first block of a sequence, or one after memory
dropout, attends to less. The seed also has one d x d gate projection over the S state vectors per
block (``state_out_to_gate``), not in the formula (1% of it for the seed config): both implementations
are scored by the same count, so utilisation compares them fairly. ``check_flops.py`` checks the
formula against torch's FLOP counter on both packages.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from typing import Any, Callable, Optional

import torch

# The seed README's enwik8 configuration (byte-level vocabulary).
SEED_CONFIG: dict[str, Any] = dict(num_tokens=256, dim=512, depth=6, dim_head=64, heads=8, max_seq_len=1024,
                                   block_width=512, num_state_vectors=512, recurrent_layers=(4,),
                                   use_flash_attn=True)
# The official code's shape: 12 layers, one recurrent layer near the top (10th).
LARGE_CONFIG: dict[str, Any] = dict(num_tokens=256, dim=1024, depth=12, dim_head=64, heads=16, max_seq_len=1024,
                                    block_width=512, num_state_vectors=512, recurrent_layers=(10,),
                                    use_flash_attn=True)
# A CPU smoke-test size: every component live (memories across segments, state reads and writes).
TINY_CONFIG: dict[str, Any] = dict(num_tokens=256, dim=64, depth=2, dim_head=16, heads=4, max_seq_len=64,
                                   block_width=32, num_state_vectors=16, recurrent_layers=(2,),
                                   use_flash_attn=True)


def forward_flops_per_token(cfg: dict[str, Any]) -> float:
    """Matmul FLOPs of one forward pass per token, from a constructor config (see module docstring)."""
    d, depth, heads, dh = cfg["dim"], cfg["depth"], cfg.get("heads", 8), cfg.get("dim_head", 64)
    vocab, width = cfg["num_tokens"], cfg.get("block_width", 512)
    kv = cfg.get("kv_heads", 1)
    states = cfg.get("num_state_vectors") or width
    ff_hidden = int(d * cfg.get("ff_mult", 4) * 2 / 3)
    write = tuple(cfg.get("recurrent_layers") or (max(depth // 2, 1),))
    reads = len(tuple(cfg.get("read_recurrent_layers") or write))  # one read per written state
    inner = heads * dh
    compressed = cfg.get("use_compressed_mem", False)

    linear_params = depth * (d * inner + d * 2 * kv * dh + 3 * d * ff_hidden + inner * d)
    linear_params += reads * (inner * d + d * inner)  # widened output projection + read queries
    linear_params += d * vocab
    memory = width + (width // 2 if compressed else 0)
    attention = depth * 4 * inner * (memory + (width + 1) / 2)
    state_read = reads * 4 * inner * states
    per_block = 2 * states * (d * 2 * kv * dh + d * 2 * inner + 2 * inner * d)
    per_block += 4 * inner * states * states + 4 * inner * states * width
    if cfg.get("gate_type", "fixed") == "lstm":
        per_block += 2 * states * 2 * d * d
    state_write = len(write) * per_block / width
    compression = 4 * depth * kv * dh * dh if compressed else 0
    return 2 * linear_params + attention + state_read + state_write + compression


def train_flops_per_token(cfg: dict[str, Any]) -> float:
    """Forward + backward: 3x the forward's matmul FLOPs."""
    return 3 * forward_flops_per_token(cfg)


# ---- timing ------------------------------------------------------------------------------------

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_each(fn: Callable[[], Any], steps: int, device: torch.device) -> list[float]:
    """Seconds of each of ``steps`` calls of fn: CUDA events on GPU (no host sync between steps,
    so the launch queue stays full as in real training), perf_counter on CPU."""
    if device.type != "cuda":
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return times
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(steps)]
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize(device)
    return [start.elapsed_time(end) / 1e3 for start, end in events]


def matmul_tflops(device: torch.device, n: int = 8192, warmup: int = 3, reps: int = 10) -> float:
    """The card's achievable bf16 matmul rate (TFLOP/s): median of n^3 matmuls on random data.

    Utilisation is quoted against this measured rate, not the datasheet's, so it reads the same on
    H100 and H200 and on a throttled card."""
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=gen)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=gen)
    for _ in range(warmup):
        torch.matmul(a, b)
    synchronize(device)
    seconds = statistics.median(time_each(lambda: torch.matmul(a, b), reps, device))
    del a, b
    return 2 * n ** 3 / seconds / 1e12


# ---- profiling ---------------------------------------------------------------------------------

def kernel_category(kernel: str) -> str:
    """matmul / attention / knn search / triton / memory / other, from a kernel's name: cuBLAS's
    Hopper kernels are "nvjet_*", its older ones "cutlass_*"; cuDNN's attention "*sdpa*"/"*fmha*";
    the fused kNN search's Triton kernels (knn_kernels) "knn_*"."""
    name = kernel.lower()
    if name.startswith("knn_"):
        return "knn search"
    if any(s in name for s in ("fmha", "flash", "sdpa", "attention")):
        return "attention"
    if any(s in name for s in ("gemm", "nvjet", "xmma", "cutlass", "splitk")):
        return "matmul"
    if name.startswith("triton"):
        return "triton"
    if "memcpy" in name or "memset" in name:
        return "memory"
    return "other"


def kernel_summary(prof: Any, top: int = 30) -> tuple[dict[str, Any], list[str]]:
    """A torch.profiler run's GPU kernels: totals (kernel_ms, kernels, ms per category) and lines
    for the ``top`` kernels by total time."""
    kernels: dict[str, list[float]] = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            entry = kernels.setdefault(event.name[:90], [0.0, 0])
            entry[0] += event.device_time  # microseconds
            entry[1] += 1
    per_category: dict[str, float] = {}
    for name, (us, _) in kernels.items():
        per_category[kernel_category(name)] = per_category.get(kernel_category(name), 0.0) + us
    totals = dict(kernel_ms=round(sum(us for us, _ in kernels.values()) / 1e3, 3),
                  kernels=int(sum(n for _, n in kernels.values())),
                  categories_ms={k: round(v / 1e3, 3) for k, v in sorted(per_category.items(), key=lambda kv: -kv[1])})
    lines = [f"{us / 1e3:8.3f} ms {int(n):5d}x  {name}"
             for name, (us, n) in sorted(kernels.items(), key=lambda kv: -kv[1][0])[:top]]
    return totals, lines


# ---- setup and output --------------------------------------------------------------------------

def base_parser(doc: str) -> argparse.ArgumentParser:
    """The command-line arguments every bench takes: label, output file, device, tiny smoke test."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--impl", default="ours", help="label written into every record")
    parser.add_argument("--out", default=None, help="JSONL file to write (truncated first)")
    parser.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny model and shapes, for a CPU smoke test")
    return parser


def peak_gib(device: torch.device) -> Optional[float]:
    """Peak GPU memory allocated since the last reset, in GiB (None off CUDA)."""
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 3)


def pick_device(name: Optional[str]) -> torch.device:
    if name is None:
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def setup_precision() -> None:
    """TF32 for any fp32 matmul left outside autocast (as the peer bench does)."""
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True


def parse_value(text: str) -> Any:
    """'4,' / '4,6' / '()' -> tuple of ints; true/false/none; int; float; else the string."""
    t = text.strip()
    if t in ("()", "", ","):
        return ()
    if "," in t:
        return tuple(int(v) for v in t.strip("()").split(",") if v.strip())
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    if t.lower() == "none":
        return None
    for kind in (int, float):
        try:
            return kind(t)
        except ValueError:
            pass
    return t


def parse_settings(items: list[str]) -> dict[str, Any]:
    """--set KEY=VALUE arguments as a dict, each value read by parse_value."""
    settings = {}
    for item in items:
        key, _, value = item.partition("=")
        settings[key.strip()] = parse_value(value)
    return settings


def parse_shape(text: str) -> tuple[int, int]:
    """'16x2048' -> (16, 2048)."""
    batch, length = text.lower().split("x")
    return int(batch), int(length)


def env_record(impl: str, device: torch.device, module: Any) -> dict[str, Any]:
    """Where the numbers come from: versions, card, and which package was imported."""
    record: dict[str, Any] = dict(case="env", impl=impl, torch=torch.__version__, device=str(device),
                                  module=os.path.dirname(module.__file__),
                                  version=getattr(module, "__version__", None))
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
        record["cuda"] = torch.version.cuda
    return record


class JsonlWriter:
    """Print one JSON line per record and write it to a JSONL file (truncated at start)."""

    def __init__(self, path: Optional[str]) -> None:
        self.file = None
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.file = open(path, "w")

    def __call__(self, record: dict[str, Any]) -> None:
        line = json.dumps(record)
        print(line, flush=True)
        if self.file is not None:
            self.file.write(line + "\n")
            self.file.flush()  # a run killed by its time limit keeps the cases it finished


def describe_error(error: BaseException) -> str:
    """One line: OOMs say so plainly, other errors keep their type and message head. An OOM keeps
    its first line whole: after the free memory and the other processes it says what this process
    holds, which tells whether the process itself or a neighbour on a shared GPU took the memory."""
    if isinstance(error, torch.OutOfMemoryError):
        return "OOM: " + str(error).splitlines()[0][:800]
    return f"{type(error).__name__}: {str(error)[:300]}"


def free_memory(device: torch.device) -> None:
    """Give cached blocks back between cases so one case's peak doesn't hide in the next's."""
    import gc
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def round_sig(x: float, digits: int = 4) -> float:
    """Round to significant digits, for readable JSON."""
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))
