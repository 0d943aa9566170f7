"""Choosing the next token from logits: greedy, temperature, top-k, top-p (nucleus)."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_sampling(vocab: int, temperature: float = 1.0, top_k: Optional[int] = None, top_p: Optional[float] = None,
                   filter_thres: Optional[float] = 0.9, eos_token: Optional[int] = None,
                   generator: Optional[torch.Generator] = None, device: Optional[torch.device] = None) -> None:
    """Raise a clear error for sampling arguments (those of ``sample``, and ``eos_token``) outside their
    ranges; ``device``: where the logits will be (a generator must be there too)."""
    if not _is_number(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a number >= 0 (0 is greedy), got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= vocab):
        raise ValueError(f"top_k must be an int in 1..{vocab} (num_tokens) or None, got {top_k!r}")
    if top_p is not None and (not _is_number(top_p) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")
    if filter_thres is not None and (not _is_number(filter_thres) or not 0 <= filter_thres < 1):
        raise ValueError(f"filter_thres must be in [0, 1) or None, got {filter_thres!r}")
    if eos_token is not None and (not isinstance(eos_token, int) or isinstance(eos_token, bool)
                                  or not 0 <= eos_token < vocab):
        raise ValueError(f"eos_token must be a token id in 0..{vocab - 1} or None, got {eos_token!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if generator is not None and device is not None and generator.device.type != device.type:
        raise ValueError(f"generator is on {generator.device}; it must be on the model's device type "
                         f"({device.type}), where tokens are sampled")


def sample(logits: Tensor, temperature: float = 1.0, top_k: Optional[int] = None, top_p: Optional[float] = None,
           filter_thres: Optional[float] = None, generator: Optional[torch.Generator] = None) -> Tensor:
    """Sample one token per row of logits (b, vocab) -> (b,).

    temperature 0 is greedy (argmax), and so is one too small for float32 (below its smallest
    normal number). ``filter_thres`` is the seed's top-k: keep the top ceil((1 - filter_thres) * vocab)
    logits. top_k and top_p filters apply after it.
    """
    if temperature < torch.finfo(torch.float32).tiny:
        return logits.argmax(dim=-1)
    logits = logits.float()
    # shifted so that the best logit is 0: divided by a tiny temperature the others may overflow,
    # but only to -inf (probability 0), never to inf (whose softmax is NaN, and argmax of NaN is token 0)
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
    vocab = logits.shape[-1]
    keep = vocab
    if filter_thres is not None:
        keep = min(keep, max(1, math.ceil((1 - filter_thres) * vocab)))
    if top_k is not None:
        keep = min(keep, top_k)
    if keep < vocab:
        kth = logits.topk(keep, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # drop a token when the tokens before it already cover top_p; the top token always stays
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    # sample without a host sync: argmax of p / E with E ~ Exp(1) draws from p (as gpt-fast does)
    probs = logits.softmax(dim=-1)
    noise = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / noise).argmax(dim=-1)
