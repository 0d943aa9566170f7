"""The attention kernels (SDPA path, the written-out reference, the logsumexp variant) against a
naive per-head definition (fp32, CPU)."""

from __future__ import annotations

import pytest
import torch

from block_recurrent_transformer_pytorch.attention import attention_with_logsumexp, reference_attention, sdpa_attention


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


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
@pytest.mark.parametrize("n", [1, 5, 12])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("mask_rows", [None, 1, "n"])
def test_attention_kernels_equal_the_definition(kv_heads, n, causal, mask_rows):
    """Grouped key/value heads, one or several queries over a longer key axis (causal aligned
    lower-right), with no mask, a per-row key mask (reset memories, a decoding cache) or a mask per
    query."""
    torch.manual_seed(0)
    b, h, m, d = 2, 4, 12, 8
    q, k, v = torch.randn(b, h, n, d), torch.randn(b, kv_heads, m, d), torch.randn(b, kv_heads, m, d)
    mask = None
    if mask_rows is not None:
        mask = torch.rand(b, 1, n if mask_rows == "n" else 1, m) > 0.4
        mask[..., m - n:] = True  # every query keeps a key: its own, under causality
    expected, expected_lse = naive_attention(q, k, v, causal, 0.3, mask)
    for kernel in (sdpa_attention, reference_attention):
        torch.testing.assert_close(kernel(q, k, v, causal=causal, scale=0.3, mask=mask), expected)
    out, lse = attention_with_logsumexp(q, k, v, causal=causal, scale=0.3, mask=mask)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(lse, expected_lse)
