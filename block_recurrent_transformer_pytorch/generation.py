"""Autoregressive generation of any length, with memories and states carried across blocks.

Two decoders share one interface, ``append(tokens) -> next-token logits``:
- ``CachedDecoder`` (the default) prefills the prompt in one pass, then costs one token's work per
  step through a static key/value cache (see cache.py);
- ``ReferenceDecoder`` is the slow, obviously-correct path the cached one is tested against: it
  keeps the memories and states of the last block boundary and re-runs the current, partial
  block for every new token — exactly what the full forward computes at that position.
GPU memory is constant in the generated length: the cache holds one block and its memories.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Optional, Sequence

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from .cache import DecodeCache
from .memory import Memories
from .sampling import check_sampling, sample

if TYPE_CHECKING:
    from .transformer import BlockRecurrentTransformer


class ReferenceDecoder:
    """Next-token logits by recomputing the current block from its start (no cache)."""

    def __init__(self, model: "BlockRecurrentTransformer", memories: Memories, states: list[Tensor]) -> None:
        self.model, self.memories, self.states = model, memories, states
        self.pending = None  # tokens of the current, not yet full, block

    def append(self, tokens: Tensor) -> Tensor:
        """Feed tokens (b, t); return the logits (b, vocab) after the last of them."""
        model, width = self.model, self.model.block_width
        tokens = tokens if self.pending is None else torch.cat((self.pending, tokens), dim=1)
        last = None
        for block in tokens.split(width, dim=1):
            last, memories, states = model.forward_block(model.token_emb(block), self.memories, self.states)
            if block.shape[1] == width:
                self.memories, self.states = memories, states
        self.pending = tokens[:, tokens.shape[1] // width * width:]
        return model.logits(last[:, -1])


class CachedDecoder:
    """Next-token logits from a static cache: prefill in one pass, then one token per step."""

    def __init__(self, model: "BlockRecurrentTransformer", memories: Memories, states: list[Tensor]) -> None:
        self.model, self.memories, self.states = model, memories, states
        device = memories.device
        # under autocast, keep the cache in the autocast dtype: attention would cast it every step
        dtype = (torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type)
                 else model.token_emb.weight.dtype)
        self.cache = DecodeCache(model, memories.batch_size, device, dtype)
        self.cache.begin_block(memories, states)

    # cuDNN's attention builds an execution plan for every new key length (tens of ms each) and
    # decoding meets a new key length at every step: leave it out, flash serves these shapes.
    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]

    def append(self, tokens: Tensor) -> Tensor:
        """Feed tokens (b, t); return the logits (b, vocab) after the last of them."""
        with sdpa_kernel(self.backends):
            return self._append(tokens)

    def _append(self, tokens: Tensor) -> Tensor:
        model, width = self.model, self.model.block_width
        while tokens.shape[1] > 0:
            n = min(width - self.cache.length, tokens.shape[1])
            chunk, tokens = tokens[:, :n], tokens[:, n:]
            last, self.memories, self.states = model.forward_block(
                model.token_emb(chunk), self.memories, self.states, cache=self.cache
            )
            if self.cache.length == width:  # the block is full and committed: start the next one
                self.cache.begin_block(self.memories, self.states)
        return model.logits(last[:, -1])


def stream(model: "BlockRecurrentTransformer", prime: Tensor, num_new: int, *, xl_memories: Optional[Memories] = None,
           states: Optional[Sequence[Tensor]] = None, temperature: float = 1.0, filter_thres: Optional[float] = 0.9,
           top_k: Optional[int] = None, top_p: Optional[float] = None, eos_token: Optional[int] = None,
           generator: Optional[torch.Generator] = None, use_cache: bool = True) -> Iterator[Tensor]:
    """Yield (b,) new tokens one step at a time. Rows that produced ``eos_token`` then yield it again.

    The caller's memories and states are read, never modified. ``use_cache=False`` decodes by the
    reference path (same tokens, much slower).
    """
    model.check_tokens(prime, "prime")
    if prime.shape[1] < 1:
        raise ValueError("prime must hold at least one token")
    check_sampling(model.config.num_tokens, temperature, top_k, top_p, filter_thres)
    if eos_token is not None and not 0 <= eos_token < model.config.num_tokens:
        raise ValueError(f"eos_token must be a token id in 0..{model.config.num_tokens - 1}, got {eos_token}")
    memories, states = model.prepare(prime.shape[0], xl_memories, states, None, model.token_emb.weight.dtype)
    decoder = (CachedDecoder if use_cache else ReferenceDecoder)(model, memories, states)
    logits = decoder.append(prime)
    done = torch.zeros(prime.shape[0], dtype=torch.bool, device=prime.device)
    for step in range(num_new):
        token = sample(logits, temperature, top_k, top_p, filter_thres, generator)
        if eos_token is not None:
            token = token.masked_fill(done, eos_token)
            done = done | (token == eos_token)
        yield token
        if step + 1 < num_new:
            logits = decoder.append(token[:, None])


def generate(model: "BlockRecurrentTransformer", prime: Tensor, length: int,
             return_memories_and_states: bool = False, **kwargs):
    """The new tokens (b, length - prime_len) following prime; ``length`` counts the prime too.

    With ``return_memories_and_states`` also the memories and states after prime + new tokens
    (committed up to the last full block), to continue from.
    """
    if not isinstance(length, int) or isinstance(length, bool) or length <= prime.shape[-1]:
        raise ValueError(f"length (total, prime included) must be an int > prime length {prime.shape[-1]}, got {length!r}")
    new = torch.stack(list(stream(model, prime, length - prime.shape[-1], **kwargs)), dim=1)
    if not return_memories_and_states:
        return new
    memories, states = model.prepare(prime.shape[0], kwargs.get("xl_memories"), kwargs.get("states"), None,
                                     model.token_emb.weight.dtype)
    decoder = CachedDecoder(model, memories, states)
    decoder.append(torch.cat((prime, new), dim=1))
    return new, decoder.memories, decoder.states
