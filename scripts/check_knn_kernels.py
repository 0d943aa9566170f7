"""The fused kNN search kernels (``knn_kernels``) against ``reference_search``, and ``routed_search``'s
two stages (its route against ``reference_search`` over the group means, its member stage by the
kernel against its torch path on that route), without a GPU: under Triton's interpreter, which runs the
kernels on CPU tensors with numpy. Not a pytest test (CI has no Triton); tests/test_gpu.py checks
the same through ``search`` and ``routed_search`` on CUDA.

    pip install --target /tmp/tritonsite triton     # Triton 3.x, outside the venv
    PYTHONPATH=$PWD:/tmp/tritonsite TRITON_INTERPRET=1 python scripts/check_knn_kernels.py

Each store layout of tests.helpers.SEARCH_PATTERNS, in fp32, fp16, bf16 and bf16 queries over fp32
keys, at shapes that leave partial tiles (130 queries, 129 or 258 groups, a head of 40 or 64, top 8
or 40): the group maxima equal torch's over the masked scores, and the fused top-k the reference's
(found mask, reachable and distinct slots, scores within the dtype's rounding). Then
``routed_search`` in each layout and dtype, its kernel made to serve the CPU
(``knn_memory.FUSED_DEVICES``), at shapes that leave partial tiles of the kept groups (4, 40 or 2
of them against knn_kernels.BLOCK_K = 32; 2 groups hold fewer candidates than top 40): the route
the reference's best groups by mean key (scores within the dtype's rounding), and on that route
the same found mask as the torch path, reachable and distinct slots, scores within the dtype's
rounding; the kernel masked in every layout but the partly filled one (nothing to mask, as
``search``). (These group counts are too few to group, so the route here takes ``search``'s torch
path; tests/test_gpu.py routes 16,384 groups through the kernels.)

bf16 needs two patches of the interpreter (Triton 3.5), applied here: it keeps bf16 as raw uint16
bits and its tl.dot multiplies those bits as integers (no bf16 matmul in numpy), and it casts fp32 to
bf16 by truncating the mantissa where the GPU rounds to nearest even. The patches widen bf16 dot
operands to fp32 exactly and round the casts as torch does.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

from tests.helpers import SEARCH_PATTERNS, assert_search_matches_reference, routed_search_both_ways, search_case

# (queries, keys) dtypes and the scores' tolerance (rounding of the reference's scores near ~4)
DTYPES = [(torch.float32, torch.float32, 1e-4), (torch.float16, torch.float16, 1e-2),
          (torch.bfloat16, torch.bfloat16, 8e-2), (torch.bfloat16, torch.float32, 8e-2)]
# (capacity, head dim, top k): 129 groups over 2,064 slots; 258 over 4,128 with k > knn_kernels.BLOCK_K
SHAPES = [(2048, 64, 8), (4096, 40, 40)]
MEMBERS = 16  # top_k.TOP_K_GROUP
# (capacity, head dim, top k, route groups) of the routed search
ROUTED_SHAPES = [(2048, 64, 8, 4), (4096, 40, 40, 40), (2048, 64, 40, 2)]


def patch_interpreter_bf16() -> None:
    """bf16 in tl.dot and fp32 -> bf16 casts as on the GPU (see the module docstring)."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpreterBuilder, TensorHandle

    def widened(handle: TensorHandle) -> np.ndarray:
        return (handle.data.astype(np.uint32) << 16).view(np.float32)  # bf16 bits -> the same value in fp32

    dot, cast = InterpreterBuilder.create_dot, InterpreterBuilder.cast_impl

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if a.dtype.scalar == tl.bfloat16:
            a, b = TensorHandle(widened(a), tl.float32), TensorHandle(widened(b), tl.float32)
        return dot(self, a, b, d, input_precision, max_num_imprecise_acc)

    def cast_impl(self, src, dst_type):
        if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
            rounded = torch.from_numpy(np.ascontiguousarray(src.data)).to(torch.bfloat16)
            return TensorHandle(rounded.view(torch.int16).numpy().view(np.uint16), tl.bfloat16)
        return cast(self, src, dst_type)

    InterpreterBuilder.create_dot, InterpreterBuilder.cast_impl = create_dot, cast_impl


def check(pattern: str, dtype: torch.dtype, key_dtype: torch.dtype, tolerance: float, capacity: int, dim: int,
          top_k: int) -> None:
    """One case: the maxima, then the top-k, masked by reachable (or by nothing where the store's
    ranges_to_mask is empty, as ``search`` does)."""
    from block_recurrent_transformer_pytorch import knn_kernels

    torch.manual_seed(0)
    q, keys, reachable, ranges = search_case(pattern, 3, 130, capacity, top_k, dtype, "cpu", dim, key_dtype)
    mask = reachable if ranges else None
    scores = (q @ keys.transpose(-1, -2).to(dtype)).masked_fill(~reachable[:, None, None, :], float("-inf"))
    expected = scores.unflatten(-1, (MEMBERS, -1)).amax(dim=-2)
    maxima = knn_kernels.group_maxima(q, keys, mask, MEMBERS)
    torch.testing.assert_close(maxima.float(), expected.float(), rtol=0, atol=tolerance)
    best, index = knn_kernels.fused_top_k(q, keys, mask, top_k, MEMBERS)
    assert_search_matches_reference(q, keys, reachable, top_k, index, best > float("-inf"), tolerance)


def check_routed(pattern: str, dtype: torch.dtype, key_dtype: torch.dtype, tolerance: float, capacity: int,
                 dim: int, top_k: int, route_groups: int) -> None:
    """One case of ``routed_search``: by its kernel as by its torch path."""
    torch.manual_seed(0)
    q, keys, reachable, ranges = search_case(pattern, 3, 130, capacity, top_k, dtype, "cpu", dim, key_dtype)
    fused, expected, calls, (means, routable, route, routed) = routed_search_both_ways(q, keys, reachable, top_k,
                                                                                        route_groups, ranges)
    assert calls and all(masked == (pattern != "partly_filled") for masked in calls), f"kernel calls {calls}"
    assert_search_matches_reference(q, means, routable, route_groups, route, routed, tolerance)
    assert_search_matches_reference(q, keys, reachable, top_k, *fused, tolerance, expected=expected)


def main() -> int:
    if os.environ.get("TRITON_INTERPRET") != "1":
        print("run with TRITON_INTERPRET=1 (Triton's interpreter, on the CPU)")
        return 2
    patch_interpreter_bf16()
    cases = [(f"{capacity} entries, d {dim}, top {top_k}", check, (capacity, dim, top_k))
             for capacity, dim, top_k in SHAPES]
    cases += [(f"routed to {groups} groups, {capacity} entries, d {dim}, top {top_k}", check_routed,
               (capacity, dim, top_k, groups)) for capacity, dim, top_k, groups in ROUTED_SHAPES]
    failures = total = 0
    for shape, run, args in cases:
        for pattern in SEARCH_PATTERNS:
            for dtype, key_dtype, tolerance in DTYPES:
                name = f"{pattern}, q {dtype}, keys {key_dtype}, {shape}"
                total += 1
                try:
                    run(pattern, dtype, key_dtype, tolerance, *args)
                    print(f"ok    {name}", flush=True)
                except AssertionError as error:
                    failures += 1
                    print(f"FAIL  {name}: {error}", flush=True)
    print(f"{failures} of {total} failed" if failures else f"all {total} passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
