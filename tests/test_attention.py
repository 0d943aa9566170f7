"""The SDPA path of the attention kernel against the attention written out (fp32, CPU)."""

from __future__ import annotations

import pytest
import torch

from block_recurrent_transformer_pytorch.attention import reference_attention, sdpa_attention


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
@pytest.mark.parametrize("n", [1, 5, 12])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("mask_rows", [None, 1, "n"])
def test_sdpa_attention_equals_the_reference(kv_heads, n, causal, mask_rows):
    """Grouped key/value heads, one or several queries over a longer key axis (causal aligned
    lower-right), with no mask, a per-row key mask (reset memories, a decoding cache) or a mask per
    query: the kernel path gives the written-out attention."""
    torch.manual_seed(0)
    b, h, m, d = 2, 4, 12, 8
    q, k, v = torch.randn(b, h, n, d), torch.randn(b, kv_heads, m, d), torch.randn(b, kv_heads, m, d)
    mask = None
    if mask_rows is not None:
        mask = torch.rand(b, 1, n if mask_rows == "n" else 1, m) > 0.4
        mask[..., m - n:] = True  # every query keeps a key: its own, under causality
    expected = reference_attention(q, k, v, causal=causal, scale=0.3, mask=mask)
    got = sdpa_attention(q, k, v, causal=causal, scale=0.3, mask=mask)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
