"""The attention kernels (SDPA path, the written-out reference, the logsumexp variant) against a
naive per-head definition (fp32, CPU)."""

from __future__ import annotations

import pytest
import torch

from block_recurrent_transformer_pytorch import attention
from block_recurrent_transformer_pytorch.attention import (MemoryRows, attention_with_logsumexp, reference_attention,
                                                           sdpa_attention)

from .helpers import flash_by_reference


def naive_attention(q, k, v, causal, scale, mask):
    """Head by head: query head i reads key/value head i // (h / kv_heads); query j of n sees key
    t of m when t <= m - n + j (causal, lower-right) and mask allows it."""
    b, h, n, _ = q.shape
    m, groups = k.shape[-2], h // k.shape[1]
    outs, lses = [], []
    for head in range(h):
        scores = q[:, head] @ k[:, head // groups].transpose(-1, -2) * scale  # (b, n, m)
        allowed = torch.ones(b, n, m, dtype=torch.bool)
        if causal:
            allowed &= torch.arange(m)[None, :] <= torch.arange(n)[:, None] + m - n
        if mask is not None:
            allowed &= mask[:, 0]
        scores = scores.masked_fill(~allowed, float("-inf"))
        outs.append(scores.softmax(-1) @ v[:, head // groups])
        lses.append(scores.logsumexp(-1, keepdim=True))
    return torch.stack(outs, 1), torch.stack(lses, 1)


def _inputs(kv_heads: int, n: int, mask_rows, dtype=torch.float32, b: int = 2, h: int = 4, m: int = 12, d: int = 8):
    """q (b, h, n, d), k, v (b, kv_heads, m, d) and a mask of None, one row per batch row or one per query."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(b, heads, length, d, dtype=dtype) for heads, length in ((h, n), (kv_heads, m), (kv_heads, m)))
    mask = None
    if mask_rows is not None:
        mask = torch.rand(b, 1, n if mask_rows == "n" else 1, m) > 0.4
        mask[..., m - n:] = True  # every query keeps a key: its own, under causality
    return q, k, v, mask


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
@pytest.mark.parametrize("n", [1, 5, 12])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("mask_rows", [None, 1, "n"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_attention_kernels_equal_the_definition(kv_heads, n, causal, mask_rows, dtype):
    """Grouped key/value heads, one or several queries over a longer key axis (causal aligned
    lower-right), with no mask, a per-row key mask (reset memories, a decoding cache) or a mask per
    query; in fp32 and in fp64 (no path may lower the precision it is given)."""
    q, k, v, mask = _inputs(kv_heads, n, mask_rows, dtype)
    expected, expected_lse = naive_attention(q, k, v, causal, 0.3, mask)
    for kernel in (sdpa_attention, reference_attention):
        torch.testing.assert_close(kernel(q, k, v, causal=causal, scale=0.3, mask=mask), expected)
    out, lse = attention_with_logsumexp(q, k, v, causal=causal, scale=0.3, mask=mask)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(lse, expected_lse)


@pytest.mark.parametrize("kv_heads", [1, 4])
def test_memory_rows_see_their_memories_whole_or_attend_their_block_alone(kv_heads):
    """``MemoryRows``: a visible row attends [memories | block] (lower-right causal), an other row
    its block alone (plain causal), in every kernel."""
    q, k, v, _ = _inputs(kv_heads, 5, None, b=3)
    rows = MemoryRows(torch.tensor([7, 0, 7]))
    with_memories, _ = naive_attention(q, k, v, True, 0.3, None)
    without, _ = naive_attention(q, k[..., -5:, :], v[..., -5:, :], True, 0.3, None)
    expected = torch.where(rows.visible[:, None, None, None] > 0, with_memories, without)
    for kernel in (sdpa_attention, reference_attention):
        torch.testing.assert_close(kernel(q, k, v, causal=True, scale=0.3, mask=rows), expected)
    torch.testing.assert_close(attention_with_logsumexp(q, k, v, causal=True, scale=0.3, mask=rows)[0], expected)


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_memory_rows_run_one_variable_length_call(monkeypatch, kv_heads):
    """The flash path of ``MemoryRows``: one variable-length lower-right causal call in which each row
    is two sequences, its hidden memories with no queries, then its queries over the rest (the
    kernel stood in by the reference on a CPU). The outputs and gradients of the boolean mask it
    replaces, and no gradient to the memories a row does not see."""
    calls = flash_by_reference(monkeypatch)
    q, k, v, _ = _inputs(kv_heads, 5, None, torch.float64, b=3)  # 12 keys: 7 memories, then the block's 5
    rows = MemoryRows(torch.tensor([7, 0, 7]))
    qkv = tuple(t.requires_grad_() for t in (q, k, v))
    got = attention._sdpa_attention(*qkv, True, 0.3, rows, flash=True)
    assert calls == [[12, 5, 12]]
    expected, _ = naive_attention(q, k, v, True, 0.3, rows.mask(5, 12))
    torch.testing.assert_close(got, expected)
    grad = torch.randn_like(got)
    got_grads = torch.autograd.grad(got, qkv, grad)
    torch.testing.assert_close(got_grads, torch.autograd.grad(expected, qkv, grad))
    assert torch.count_nonzero(got_grads[1][1, :, :7]) == 0  # row 1 sees no memories: none of their keys learns


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_memory_rows_of_several_blocks_give_each_row_its_newest_entries(monkeypatch, kv_heads):
    """Memories of two blocks of 4 (``xl_memory_blocks=2``): rows seeing 8, 4 and 0 of them, in one
    variable-length call (the reference standing in for flash on a CPU): the outputs and gradients
    of the boolean mask, and the entries a row does not see get no gradient from it; also while the
    memories hold one block yet."""
    calls = flash_by_reference(monkeypatch)
    q, k, v, _ = _inputs(kv_heads, 5, None, torch.float64, b=3)  # 12 keys
    k, v = (torch.cat((t[..., :1, :], t), dim=-2) for t in (k, v))  # 13: 8 memories, then 5 of the block
    rows = MemoryRows(torch.tensor([8, 4, 0]))
    qkv = tuple(t.requires_grad_() for t in (q, k, v))
    got = attention._sdpa_attention(*qkv, True, 0.3, rows, flash=True)
    assert calls == [[13, 9, 5]]
    expected, _ = naive_attention(q, k, v, True, 0.3, rows.mask(5, 13))
    torch.testing.assert_close(got, expected)
    grad = torch.randn_like(got)
    got_grads = torch.autograd.grad(got, qkv, grad)
    torch.testing.assert_close(got_grads, torch.autograd.grad(expected, qkv, grad))
    assert torch.count_nonzero(got_grads[1][1, :, :4]) == 0 and torch.count_nonzero(got_grads[1][2, :, :8]) == 0
    assert torch.count_nonzero(got_grads[1][1, :, 4:8]) > 0
    calls.clear()
    short = MemoryRows(torch.tensor([4, 4, 0]))  # the memories hold one block yet
    got = attention._sdpa_attention(q, k[..., 4:, :], v[..., 4:, :], True, 0.3, short, flash=True)
    assert calls == [[9, 9, 5]]
    torch.testing.assert_close(got, naive_attention(q, k[..., 4:, :], v[..., 4:, :], True, 0.3, short.mask(5, 9))[0])


@pytest.mark.parametrize("kv_heads", [1, 4])
def test_memory_rows_of_one_query_take_the_written_out_mask_not_the_variable_length_call(monkeypatch, kv_heads):
    """A block of one token (decoding's first of a block) with rows reset: the boolean mask written out,
    never the variable-length kernel (which fails on one query a sequence with grouped heads)."""
    calls = flash_by_reference(monkeypatch)
    q, k, v, _ = _inputs(kv_heads, 1, None, torch.float64, b=3, m=8)  # 7 memories, then the query's own key
    rows = MemoryRows(torch.tensor([7, 0, 3]))
    got = attention._sdpa_attention(q, k, v, True, 0.3, rows, flash=True)
    assert calls == []
    torch.testing.assert_close(got, naive_attention(q, k, v, True, 0.3, rows.mask(1, 8))[0])


def test_flash_operands_are_cast_as_autocast_casts_and_refused_where_flash_cannot_run(monkeypatch):
    """Under autocast the direct flash call gets what SDPA would: fp32 operands in the autocast
    dtype, float64 never lowered (so refused); a head size past the GPU's limit, not a multiple of 8,
    or query heads that do not group over the key/value heads are refused before any cast."""
    monkeypatch.setattr(attention, "_flash_head_size_limit", lambda device: 64)
    q, k, v, _ = _inputs(2, 5, None, d=64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = attention._flash_operands(q, k, v)
        assert [t.dtype for t in cast] == [torch.bfloat16] * 3
        assert all(torch.equal(a, b.bfloat16()) for a, b in zip(cast, (q, k, v)))
        assert attention._flash_operands(q.double(), k.double(), v.double()) is None
        for d in (72, 60):  # past the limit; not a multiple of 8
            assert attention._flash_operands(*_inputs(2, 5, None, d=d)[:3]) is None
        assert attention._flash_operands(*_inputs(3, 5, None, d=64)[:3]) is None  # 4 heads over 3
    assert attention._flash_operands(q, k, v) is None  # fp32 without autocast
    assert [t.dtype for t in attention._flash_operands(q.half(), k.half(), v.half())] == [torch.float16] * 3


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_a_single_masked_query_scores_in_fp32_under_autocast(kv_heads):
    """Decoding's attention (one query, a masked cache) in bf16 under autocast computes what it
    computes outside autocast, where its bf16 operands are scored in fp32 (autocast must not
    cast them back); and its gradient in fp64 passes gradcheck."""
    q, k, v, mask = _inputs(kv_heads, 1, 1, m=64, d=16)
    q, k, v = q.bfloat16(), k.bfloat16(), v.bfloat16()
    outside = sdpa_attention(q, k, v, causal=False, scale=8.0, mask=mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = sdpa_attention(q, k, v, causal=False, scale=8.0, mask=mask)
    assert torch.equal(inside, outside)
    expected, _ = naive_attention(q.float(), k.float(), v.float(), False, 8.0, mask)
    torch.testing.assert_close(outside.float(), expected, rtol=8e-3, atol=8e-3)

    q, k, v, mask = _inputs(kv_heads, 1, 1, torch.float64)
    assert torch.autograd.gradcheck(lambda *qkv: sdpa_attention(*qkv, causal=False, scale=0.3, mask=mask),
                                    tuple(t.requires_grad_() for t in (q, k, v)))


def test_sdpa_backends_keep_the_callers_choice_without_cudnn():
    """SDPA's cuDNN backend failed in training at batch >= 64 on an H200 (issue 12): our calls run
    among the backends the caller enabled, less cuDNN's; a caller's restriction still holds."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from block_recurrent_transformer_pytorch.attention import sdpa_backends

    flash, efficient, math, cudnn = (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH,
                                     SDPBackend.CUDNN_ATTENTION)
    assert torch.backends.cuda.cudnn_sdp_enabled()  # torch's default: cuDNN on
    assert sdpa_backends() == [flash, efficient, math]
    with sdpa_kernel(flash):
        assert sdpa_backends() == [flash]
    with sdpa_kernel([cudnn, math]):
        assert sdpa_backends() == [math]
    with sdpa_kernel([efficient, flash]):
        assert sdpa_backends() == [flash, efficient]
    with sdpa_kernel(cudnn), pytest.raises(RuntimeError, match="never cuDNN"):
        sdpa_backends()
