"""What a block's causal attention over [memories | block] costs, forward + backward, by kernel.

The library's call (``attention.sdpa_attention``: the flash kernel on the n x m band, its causal mask
aligned lower right) against the left-padding it replaced (queries padded to m rows so that SDPA's
top-left causal mask is square, m - n rows scored for nothing) and against FlexAttention (compiled,
a lower-right block mask), at the shapes of a training step: one call per block and layer. Then a
block where half the rows start a new document (their memories hidden): the library's one
variable-length flash call (``MemoryRows``) against the two flash calls selected per row it replaced
(thirtieth session) and the boolean key mask before them (the memory-efficient kernel). Last, cuDNN's
kernel (which the library never uses, see attention.py), called directly: causal as torch sets it
(the difference to the band says whether that aligns lower right), on left-padded queries, and as
two calls that together score what the band scores (the block causal, the memories whole; not
merged, so timing only).

    PYTHONPATH=$PWD python bench/attention_kernels.py                  # the long-documents preset and the seed config
    PYTHONPATH=$PWD python bench/attention_kernels.py --shape 16,8,4,1024,2048,64

Prints one JSON line per shape and kernel: milliseconds per call (median of --steps), and TFLOP/s
counted on the band's useful scores alone (so padding shows up as a lower rate). CUDA only.
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

import common

from block_recurrent_transformer_pytorch.attention import MemoryRows, sdpa_attention

# batch, query heads, key/value heads, queries (a block), keys (memories + block), head size (the long-documents
# preset's 16 rows until the thirty-first session, when it took 32: kept at 16 so that the records compare)
SHAPES = {"long-documents": (16, 8, 4, 1024, 2048, 64), "seed": (16, 8, 1, 512, 1024, 64)}


def padded(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """The former call: queries left-padded to m rows, SDPA's square causal mask, the last n rows kept."""
    n, m = q.shape[-2], k.shape[-2]
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        out = F.scaled_dot_product_attention(F.pad(q, (0, 0, m - n, 0)), k, v, is_causal=True, scale=scale,
                                             enable_gqa=q.shape[1] != k.shape[1])
    return out[..., m - n:, :]


def flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """FlexAttention with the lower-right causal mask as a block mask (fully masked tiles skipped),
    compiled (built at its first call for a shape)."""
    n, m = q.shape[-2], k.shape[-2]
    if (n, m) not in _FLEX_MASKS:
        _FLEX_MASKS[n, m] = create_block_mask(lambda b, h, q_idx, kv_idx: kv_idx <= q_idx + m - n, None, None, n, m,
                                              device=q.device)
    return _flex_compiled(q, k, v, block_mask=_FLEX_MASKS[n, m], scale=scale, enable_gqa=q.shape[1] != k.shape[1])


_FLEX_MASKS: dict = {}
_flex_compiled = torch.compile(flex_attention, fullgraph=True, dynamic=False)


def two_flash_calls(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                    rows: MemoryRows) -> torch.Tensor:
    """The former ``MemoryRows`` path (fourteenth to twenty-ninth sessions), rows seeing all of their
    memories or none: two lower-right flash calls, with the memories and over the block alone, each
    row keeping its own."""
    n, m = q.shape[-2], k.shape[-2]
    with_memories, alone = (torch.ops.aten._scaled_dot_product_flash_attention(
        q, k[..., start:, :], v[..., start:, :], 0.0, True, False, scale=scale)[0] for start in (0, m - n))
    return torch.where((rows.visible > 0)[:, None, None, None], with_memories, alone)


def cudnn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool = True) -> torch.Tensor:
    """cuDNN's kernel called directly, key/value heads repeated per query head (the repeat timed too)."""
    groups = q.shape[1] // k.shape[1]
    k, v = (t.repeat_interleave(groups, dim=1) for t in (k, v))
    return torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, causal, False, scale=scale)[0]


def cudnn_padded(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """cuDNN on queries left-padded to m rows (a square causal mask: aligned either way), the last n kept."""
    n, m = q.shape[-2], k.shape[-2]
    return cudnn(F.pad(q, (0, 0, m - n, 0)), k, v, scale)[..., m - n:, :]


def split_unmerged(kernel: Callable[..., torch.Tensor], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """The band's work as two calls: the block's queries over its own keys (square, causal) and over
    the memories (no mask). Their outputs are added, not merged by their logsumexps: timing only."""
    n = q.shape[-2]
    return (kernel(q, k[..., -n:, :], v[..., -n:, :], scale)
            + kernel(q, k[..., :-n, :], v[..., :-n, :], scale, causal=False))


def flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool = True) -> torch.Tensor:
    """The flash kernel called directly (causal aligned lower right), grouped heads as they are."""
    return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal, False, scale=scale)[0]


def band_flops(batch: int, heads: int, n: int, m: int, head_size: int) -> float:
    """Forward + backward FLOPs of the scores a query may attend: 4 per score and head dimension
    forward (QK^T and PV), 2.5 times that backward."""
    scores = n * (m - n) + n * (n + 1) / 2
    return 3.5 * 4 * batch * heads * scores * head_size


def parse_shape(text: str) -> tuple[int, ...]:
    """--shape: batch,heads,kv_heads,n,m,head_size, whole numbers, heads a multiple of kv_heads, m >= n."""
    fields = text.split(",")
    shape = tuple(int(field) for field in fields) if all(field.isdigit() for field in fields) else ()
    if len(shape) != 6 or 0 in shape or shape[1] % shape[2] or shape[4] < shape[3]:
        raise argparse.ArgumentTypeError(f"{text!r}: give batch,heads,kv_heads,n,m,head_size as whole numbers > 0, "
                                         f"heads a multiple of kv_heads, m >= n")
    return shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", action="append", default=None, type=parse_shape,
                        help="batch,heads,kv_heads,n,m,head_size (repeatable; default: the preset's and the seed's)")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    shapes = {",".join(map(str, shape)): shape for shape in args.shape} if args.shape else SHAPES
    device = torch.device("cuda")
    for name, (batch, heads, kv_heads, n, m, head_size) in shapes.items():
        torch.manual_seed(0)
        q = torch.randn(batch, heads, n, head_size, device=device, dtype=torch.bfloat16, requires_grad=True)
        k, v = (torch.randn(batch, kv_heads, m, head_size, device=device, dtype=torch.bfloat16, requires_grad=True)
                for _ in range(2))
        grad = torch.randn_like(q)
        scale = head_size ** -0.5
        rows = MemoryRows((torch.arange(batch, device=device) % 2 == 0) * (m - n))
        kernels = {"band (library)": lambda q, k, v, scale: sdpa_attention(q, k, v, causal=True, scale=scale),
                   "padded (former)": padded, "flex": flex,
                   "rows reset: boolean mask (former)":
                       lambda q, k, v, scale: sdpa_attention(q, k, v, causal=True, scale=scale, mask=rows.mask(n, m)),
                   "rows reset: two flash calls (former)":
                       lambda q, k, v, scale: two_flash_calls(q, k, v, scale, rows),
                   "rows reset: MemoryRows (library)":
                       lambda q, k, v, scale: sdpa_attention(q, k, v, causal=True, scale=scale, mask=rows),
                   "flash: block + memories, unmerged (timing only)":
                       lambda q, k, v, scale: split_unmerged(flash, q, k, v, scale),
                   # cuDNN last of each shape: a failure there must not leave the GPU in a state its others meet
                   "cudnn: causal as torch sets it": cudnn, "cudnn: padded": cudnn_padded,
                   "cudnn: block + memories, unmerged (timing only)":
                       lambda q, k, v, scale: split_unmerged(cudnn, q, k, v, scale)}
        for kernel_name, kernel in kernels.items():
            # each against the first of its kind: the band's, or the reset rows' boolean mask
            against = "rows reset: boolean mask (former)" if kernel_name.startswith("rows") else "band (library)"

            def step() -> None:  # gradients returned, not accumulated: no extra kernels in the timing
                torch.autograd.grad(kernel(q, k, v, scale), (q, k, v), grad)

            try:
                with torch.no_grad():
                    reference = kernels[against](q, k, v, scale).float()
                    error = float((kernel(q, k, v, scale).float() - reference).norm() / reference.norm())
                for _ in range(3):
                    step()
                seconds = statistics.median(common.time_each(step, args.steps, device))
            except Exception as failure:  # a kernel this torch cannot build: say so, measure the others
                print(json.dumps(dict(shape=name, kernel=kernel_name, error=common.describe_error(failure))))
                continue
            print(json.dumps(dict(shape=name, kernel=kernel_name, ms=round(seconds * 1e3, 3),
                                  band_tflops=round(band_flops(batch, heads, n, m, head_size) / seconds / 1e12, 1),
                                  relative_difference=round(error, 5))), flush=True)


if __name__ == "__main__":
    main()
