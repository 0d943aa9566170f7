"""Autoregressive generation of any length, with memories and states carried across blocks.

Two decoders share one interface, ``append(tokens) -> next-token logits``:
- ``CachedDecoder`` (the default) prefills the prompt in one pass, then costs one token's work per
  step through a static key/value cache (see cache.py);
- ``ReferenceDecoder`` is the slow, obviously-correct path the cached one is tested against: it
  keeps the memories and states of the last block boundary and re-runs the current, partial
  block for every new token — exactly what the full forward computes at that position.
GPU memory is constant in the generated length: the cache holds the current block and its memories.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Optional, Sequence, Union

import torch
from torch import Tensor

from .cache import DecodeCache
from .config import check_bool
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
    """Next-token logits from a static cache: prefill in one pass, then one token per step.

    On CUDA the one-token step is captured once as a CUDA graph and replayed: a step is a few
    hundred small kernels, and launching them one by one from Python costs more than running them.
    ``compile=True`` also compiles that step (torch.compile, whole graph) before the capture, which
    fuses its kernels: tens of seconds once per model configuration and autocast state (a second
    batch size compiles once more, then serves any batch size), for about half the time per token.
    A process holds at most torch._dynamo.config.recompile_limit (8) such compilations.
    """

    def __init__(self, model: "BlockRecurrentTransformer", memories: Memories, states: list[Tensor],
                 use_cuda_graph: Optional[bool] = None, compile: bool = False) -> None:
        device, knn_layers = memories.device, model.config.knn_layers
        check_bool("compile", compile)
        # a graph reads fixed addresses; the kNN store's may move at a block's end (grown, or copied for a branch)
        if use_cuda_graph and knn_layers:
            raise ValueError("use_cuda_graph=True cannot serve a model with knn_layers: the graph would read "
                             "the kNN store of the block it was captured in")
        if use_cuda_graph and device.type != "cuda":
            raise ValueError(f"use_cuda_graph=True needs the model on a CUDA device, got device={device.type}")
        graphable = device.type == "cuda" and not knn_layers
        self.use_cuda_graph = graphable if use_cuda_graph is None else use_cuda_graph
        # torch.compile fuses the step's few hundred small kernels into far fewer before the graph
        # captures them; compiled once, at capture, so only the graph-replayed step can use it
        if compile and not self.use_cuda_graph:
            raise ValueError(f"compile=True compiles the CUDA-graph decoding step, which needs a CUDA device, a model "
                             f"without knn_layers and use_cuda_graph True or None (automatic); got "
                             f"device={device.type}, knn_layers={knn_layers}, use_cuda_graph={use_cuda_graph}")
        self.compile = compile
        self.model, self.memories, self.states = model, memories, states
        # decode in the autocast state the decoder was made in, whatever the caller's is later, and
        # keep the cache in that dtype (attention would otherwise cast it every step)
        self.autocast = torch.is_autocast_enabled(device.type)
        self.dtype = model.compute_dtype()
        self.cache = DecodeCache(model, memories.batch_size, device, self.dtype)
        self.cache.begin_block(memories, states)
        self.graph = None

    def append(self, tokens: Tensor) -> Tensor:
        """Feed tokens (b, t); return the logits (b, vocab) after the last of them."""
        width, cache = self.model.block_width, self.cache
        # no autocast weight cache: a captured graph must cast the weights itself, not read copies
        # that the cache frees when the caller's autocast region ends
        precision = torch.autocast(cache.keys.device.type, dtype=self.dtype, enabled=self.autocast,
                                   cache_enabled=False)
        with precision:
            while tokens.shape[1] > 0:
                n = min(width - cache.length, tokens.shape[1])
                chunk, tokens = tokens[:, :n], tokens[:, n:]
                if n == 1 and cache.length < width - 1 and self.use_cuda_graph:
                    logits = self._replay(chunk)  # a step in the middle of a block: no commit
                else:
                    logits = self._step(chunk)
                if cache.length == width:  # the block is full and committed: start the next one
                    cache.begin_block(self.memories, self.states)
        return logits

    def _step(self, chunk: Tensor) -> Tensor:
        """Run tokens through the model, extending the cache; the logits after the last."""
        model = self.model
        last, self.memories, self.states = model.forward_block(
            model.token_emb(chunk), self.memories, self.states, cache=self.cache
        )
        return model.logits(last[:, -1])

    def _replay(self, token: Tensor) -> Tensor:
        """``_step`` for one mid-block token, by replaying the captured graph (captured on first use)."""
        if self.graph is None:
            self._capture(token)
        self.static_token.copy_(token)
        self.graph.replay()  # advances the cache's device-side position
        self.cache.length += 1
        return self.static_logits.clone()

    def _capture(self, token: Tensor) -> None:
        """Record one mid-block step. Its writes land in the slot the next real step overwrites."""
        cache = self.cache
        self.static_token = token.clone()
        length, position = cache.length, cache.position.clone()
        # A mid-block step computes the same at every place in the block (its place is the device-side
        # cache.position); the host-side length only tells whether the block ends. Capture, and
        # compile, at length 0, so that one compiled step serves every later decoder of the model.
        # (dynamic=None: a second batch size compiles once more, with the batch size symbolic.)
        step = torch.compile(self._step, fullgraph=True) if self.compile else self._step

        def rewind(to: int) -> None:
            cache.length = to
            cache.position.copy_(position)

        try:
            rewind(0)
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):  # warm up (library handles, workspaces) outside the graph
                for _ in range(2):
                    step(self.static_token)
                    rewind(0)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.static_logits = step(self.static_token)
            self.graph = graph
        finally:  # the cache as it was, whether the capture succeeded or raised
            rewind(length)


def start(model: "BlockRecurrentTransformer", prime: Tensor, *, xl_memories: Optional[Memories] = None,
          states: Optional[Sequence[Tensor]] = None, use_cache: bool = True,
          compile: bool = False) -> tuple[Union[CachedDecoder, ReferenceDecoder], Tensor]:
    """Check the prime, build a decoder from the caller's memories and states, prefill the prime;
    return the decoder and the logits after the prime. ``compile``: see ``CachedDecoder``."""
    model.check_tokens(prime, "prime")
    if prime.shape[1] < 1:
        raise ValueError("prime must hold at least one token")
    prime = prime.long()  # nn.Embedding takes int64 ids; a byte corpus is naturally uint8
    check_bool("compile", compile)
    check_bool("use_cache", use_cache)
    if compile and not use_cache:
        raise ValueError("compile=True compiles the cached decoder's step; it cannot go with use_cache=False")
    memories, states = model.prepare(prime.shape[0], xl_memories, states)
    if use_cache:
        decoder = CachedDecoder(model, memories, states, compile=compile)
    else:
        decoder = ReferenceDecoder(model, memories, states)
    return decoder, decoder.append(prime)


# every step without autograd, whatever the grad mode of the caller's ``next()`` (a decorator on a
# generator function applies to each resumption; the caller's mode is restored at each yield)
@torch.no_grad()
def sample_tokens(decoder: Union[CachedDecoder, ReferenceDecoder], logits: Tensor, num_new: int, *,
                  temperature: float = 1.0,
                  filter_thres: Optional[float] = 0.9, top_k: Optional[int] = None, top_p: Optional[float] = None,
                  eos_token: Optional[int] = None, generator: Optional[torch.Generator] = None) -> Iterator[Tensor]:
    """Yield (b,) sampled tokens, feeding each back to the decoder before the next (not the last:
    nothing needs its logits). Rows that produced ``eos_token`` then yield it again."""
    done = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
    for step in range(num_new):
        token = sample(logits, temperature, top_k, top_p, filter_thres, generator)
        if eos_token is not None:
            token = token.masked_fill(done, eos_token)
            done = done | (token == eos_token)
        yield token
        if step + 1 < num_new:
            logits = decoder.append(token[:, None])


def _decode(model: "BlockRecurrentTransformer", prime: Tensor, num_new: int, xl_memories: Optional[Memories],
            states: Optional[Sequence[Tensor]], use_cache: bool, compile: bool,
            sampling: dict) -> tuple[Union[CachedDecoder, ReferenceDecoder], Iterator[Tensor]]:
    """Check every argument at once, prefill, and return the decoder and the iterator of new tokens."""
    if not isinstance(num_new, int) or isinstance(num_new, bool) or num_new < 1:
        raise ValueError(f"the number of new tokens must be a positive int, got {num_new!r}")
    check_sampling(model.config.num_tokens, **sampling, device=model.device)
    decoder, logits = start(model, prime, xl_memories=xl_memories, states=states, use_cache=use_cache, compile=compile)
    return decoder, sample_tokens(decoder, logits, num_new, **sampling)


def stream(model: "BlockRecurrentTransformer", prime: Tensor, num_new: int, *, xl_memories: Optional[Memories] = None,
           states: Optional[Sequence[Tensor]] = None, use_cache: bool = True, compile: bool = False,
           **sampling) -> Iterator[Tensor]:
    """An iterator of (b,) new tokens, one per step; ``sampling`` as for ``sample_tokens``. The
    arguments are checked at once, not at the first ``next``. The caller's memories and states are
    read, never modified. ``use_cache=False`` decodes by the reference path (much slower);
    ``compile=True`` compiles the cached step before its CUDA graph captures it (see ``CachedDecoder``)."""
    return _decode(model, prime, num_new, xl_memories, states, use_cache, compile, sampling)[1]


def generate(model: "BlockRecurrentTransformer", prime: Tensor, length: int, *,
             xl_memories: Optional[Memories] = None, states: Optional[Sequence[Tensor]] = None,
             use_cache: bool = True, compile: bool = False, return_memories_and_states: bool = False,
             **sampling) -> Union[Tensor, tuple[Tensor, Memories, list[Tensor]]]:
    """The new tokens (b, length - prime_len) following prime; ``length`` counts the prime too.

    With ``return_memories_and_states`` also the memories and states after prime + new tokens
    (committed up to the last full block), to continue from.
    """
    if not isinstance(prime, Tensor) or prime.ndim != 2:
        model.check_tokens(prime, "prime")  # raises the clear error
    if not isinstance(length, int) or isinstance(length, bool) or length <= prime.shape[-1]:
        raise ValueError(f"length (total, prime included) must be an int > prime length {prime.shape[-1]}, got {length!r}")
    check_bool("return_memories_and_states", return_memories_and_states)
    decoder, tokens = _decode(model, prime, length - prime.shape[-1], xl_memories, states, use_cache, compile,
                              sampling)
    new = torch.stack(list(tokens), dim=1)
    if not return_memories_and_states:
        return new
    decoder.append(new[:, -1:])  # commit the last token too
    # the caller's own tensors, as forward's (the decoder's may be views of its cache or of the initial state)
    return new, decoder.memories, [state.clone() for state in decoder.states]
