"""BlockRecurrentTransformer: tokens processed block by block through layers of attention over
[memories | block], with recurrent states read and written once per block."""

from __future__ import annotations

from dataclasses import replace
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .attention import Mask, MemoryRows
from .block_context import BlockContext
from .blocks import AttentionBlock, FeedForward
from .config import BlockRecurrentConfig, check_bool
from .knn_memory import KNNStore
from .memory import (MemoryCompressor, Memories, check_memories, empty_memories, from_layer_list,
                     push)
from .positions import RotaryEmbedding
from .state import RecurrentState, StateView, check_states

States = list[Tensor]


class BlockRecurrentTransformer(nn.Module):
    """The Block-Recurrent Transformer (Hutchins et al. 2022) with the seed package's constructor.

    ``model(x)`` returns ``(logits, memories, states)``; pass ``memories`` and ``states`` back to
    continue the same sequences. With ``return_loss=True`` the input carries one extra token and
    the mean cross-entropy replaces the logits.
    """

    def __init__(self, config: Optional[BlockRecurrentConfig] = None, *, activation_checkpointing: bool = False,
                 **kwargs) -> None:
        """Build from a ``BlockRecurrentConfig`` or from its fields as keywords (the seed's usage:
        ``BlockRecurrentTransformer(num_tokens=..., dim=..., depth=..., ...)``).

        activation_checkpointing: recompute each block's activations in the backward pass
            (memory for time on long segments; changes no result).
        """
        super().__init__()
        if config is None:
            config = BlockRecurrentConfig(**kwargs)
        elif not isinstance(config, BlockRecurrentConfig) or kwargs:
            raise TypeError("pass a BlockRecurrentConfig or its fields as keywords, not both")
        check_bool("activation_checkpointing", activation_checkpointing)
        self.config = config
        self.activation_checkpointing = activation_checkpointing
        depth, dim, dim_head = config.depth, config.dim, config.dim_head

        # which recurrent state (by index into recurrent_layers) each layer reads and writes
        self.reads_at = {layer: [i for i, r in enumerate(config.read_recurrent_layers) if r == layer]
                         for layer in range(1, depth + 1)}
        self.writes_at = {w: i for i, w in enumerate(config.recurrent_layers)}
        self.knn_at = {layer: i for i, layer in enumerate(config.knn_layers)}  # layer -> its slice of the store

        self.token_emb = nn.Embedding(config.num_tokens, dim)  # N(0, 1): nn.Embedding's default, the seed's
        if config.embedding_init_std != 1.0:  # drawn only then, so the default consumes the seed's random numbers
            nn.init.normal_(self.token_emb.weight, std=config.embedding_init_std)
        max_memory = config.xl_memory_len + config.compressed_mem_len  # the positions memories sit at: -max_memory..-1
        self.rotary = RotaryEmbedding(dim_head, config.rotary_theta, config.xpos_scale_base, max_memory=max_memory,
                                      block_width=config.block_width, rotary_dim=config.rotary_dim)
        self.layers = nn.ModuleList(
            Layer(AttentionBlock(config, qk_rmsnorm=config.qk_rmsnorm(layer), num_state_reads=len(self.reads_at[layer]),
                                 knn=layer in self.knn_at, mixes_first_values=config.value_residual and layer > 1),
                  FeedForward(dim, config.ff_mult, config.ff_glu, config.zero_init_output_projections))
            for layer in range(1, depth + 1)
        )
        # unet_skips: skip_weights[k] scales the output of layer half - 1 - k (counted from 0, half = depth // 2)
        # where it is added to the input of its mirror, layer depth - half + k
        self.skip_weights = nn.Parameter(torch.ones(depth // 2)) if config.unet_skips else None
        # embedding_mixing: the pairs (a, b) of layers 2..depth's inputs a * h + b * x0, starting as the plain residual
        # stream; flat, 1-D like every other learned scalar, so that no rule that decays matrices (ndim >= 2) decays it
        self.embedding_mix = (nn.Parameter(torch.tensor([1.0, 0.0]).repeat(depth - 1)) if config.embedding_mixing
                              else None)
        self.states = nn.ModuleList(RecurrentState(config) for _ in config.recurrent_layers)
        self.compressor = MemoryCompressor(config) if config.use_compressed_mem else None
        self.norm_out = nn.LayerNorm(dim, bias=False)
        self.to_logits = nn.Linear(dim, config.num_tokens, bias=False)

    @classmethod
    def from_config(cls, config: Union[BlockRecurrentConfig, dict], **options) -> "BlockRecurrentTransformer":
        """Build a model from a config (or its ``to_dict()``), e.g. from a checkpoint; ``options``
        are the constructor's settings that change no weight (activation_checkpointing)."""
        return cls(config if isinstance(config, BlockRecurrentConfig) else BlockRecurrentConfig(**config), **options)

    def save_pretrained(self, directory: Union[str, Path]) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into directory (huggingface_hub's file names;
        needs the ``hub`` extra). See pretrained.py."""
        from .pretrained import save_pretrained

        return save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory: Union[str, Path], **options) -> "BlockRecurrentTransformer":
        """The model save_pretrained wrote in directory; a missing, damaged or mismatched file raises a
        ``PretrainedError`` naming it. ``options`` as from_config's."""
        from .pretrained import from_pretrained

        return from_pretrained(cls, directory, **options)

    @classmethod
    def from_seed(cls, state_dict: Union[Mapping[str, Tensor], nn.Module], **seed_keywords) -> "BlockRecurrentTransformer":
        """The model a seed package 0.4.4 model computes: ``state_dict`` is the seed model's
        ``state_dict()`` (or the model), ``seed_keywords`` the keywords its constructor was given.
        Logits, memories and states match the seed's (see seed.py for how the weights map, README
        "Migrating from 0.4.4" for what still differs). ``activation_checkpointing`` may be passed too."""
        from .seed import convert_state_dict, seed_config

        options = {"activation_checkpointing": seed_keywords.pop("activation_checkpointing")} \
            if "activation_checkpointing" in seed_keywords else {}
        model = cls(seed_config(**seed_keywords), **options)
        model.load_state_dict(convert_state_dict(state_dict, model.config))
        return model

    def _read_only(name: str):
        """A config field as a read-only property (the seed's attribute of that name)."""

        def get(self):
            return getattr(self.config, name)

        def set(self, value) -> None:
            raise AttributeError(f"{name} is fixed at construction (model.config.{name}, the weights are built for "
                                 f"it): build a new model, e.g. BlockRecurrentTransformer.from_config("
                                 f"{{**model.config.to_dict(), {name!r}: ...}}), and load the weights into it")

        return property(get, set, doc=f"The config's {name} (read-only).")

    max_seq_len = _read_only("max_seq_len")
    block_width = _read_only("block_width")
    ignore_index = _read_only("ignore_index")
    recurrent_layers = _read_only("recurrent_layers")
    read_recurrent_layers = _read_only("read_recurrent_layers")
    del _read_only

    @property
    def device(self) -> torch.device:
        """Where the weights are."""
        return self.token_emb.weight.device

    def compute_dtype(self) -> torch.dtype:
        """The dtype activations have here: autocast's inside an autocast region, else the weights'."""
        device = self.device.type
        return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else self.token_emb.weight.dtype

    # ---- memories and states -----------------------------------------------------------------

    def initial_states(self, batch: int) -> States:
        """The learned initial state of every recurrent layer, (batch, S, dim) each."""
        return [s.initial(batch) for s in self.states]

    def prepare(self, batch: int, xl_memories: Optional[Memories] = None, states: Optional[Sequence[Tensor]] = None,
                reset: Optional[Tensor] = None) -> tuple[Memories, States]:
        """Check what the caller passed in, fill in defaults and apply a per-row reset."""
        device = self.device
        if xl_memories is None or (isinstance(xl_memories, (list, tuple)) and len(xl_memories) == 0):
            memories = empty_memories(self.config, batch, device, self.compute_dtype())
        else:
            if isinstance(xl_memories, (list, tuple)):  # the seed's list of per-layer tensors
                xl_memories = from_layer_list(xl_memories, self.config)
            memories = check_memories(xl_memories, self.config, batch, device)
        if memories.xl_inputs is not None:  # in the residual stream's dtype, which the norm reads them in
            memories = replace(memories, xl_inputs=memories.xl_inputs.to(self.token_emb.weight.dtype))
        if states is None or (isinstance(states, (list, tuple)) and len(states) == 0):
            states = self.initial_states(batch)
        else:
            states = check_states(states, self.config, batch, device, self.token_emb.weight.dtype)
        if reset is not None:
            if not isinstance(reset, Tensor) or reset.dtype != torch.bool or tuple(reset.shape) != (batch,):
                raise ValueError(f"reset must be a bool tensor of shape (batch={batch},), got {reset!r}")
            reset = reset.to(device)
            memories = memories.reset(reset, self.config)
            states = [torch.where(reset[:, None, None], init, s) for init, s in zip(self.initial_states(batch), states)]
        return memories, states

    def check_tokens(self, x: Tensor, name: str = "x", on_model_device: bool = True) -> None:
        """Raise a clear error unless x is a (batch, length) tensor of token ids in [0, num_tokens)
        (on the model's device, unless ``on_model_device=False``)."""
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(x).__name__}")
        if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer token ids, got dtype {x.dtype}")
        if x.ndim != 2:
            raise ValueError(f"{name} must have shape (batch, length), got {tuple(x.shape)}")
        if on_model_device and x.device != self.device:
            raise ValueError(f"{name} is on {x.device}, the model is on {self.device}")
        # a host sync: skipped while torch.compile traces and while a CUDA graph captures
        if x.numel() and not torch.compiler.is_compiling() and not (x.is_cuda and torch.cuda.is_current_stream_capturing()):
            low, high = torch.stack(torch.aminmax(x)).tolist()  # one host sync
            if low < 0 or high >= self.config.num_tokens:
                raise ValueError(
                    f"{name} holds token ids in [{low}, {high}]; allowed are 0..{self.config.num_tokens - 1} (num_tokens)"
                )

    @torch.no_grad()
    def generate(self, prime: Tensor, length: Optional[int] = None, xl_memories: Optional[Memories] = None,
                 states: Optional[Sequence[Tensor]] = None, temperature: float = 1.0,
                 filter_thres: Optional[float] = 0.9, return_memories_and_states: bool = False, *,
                 top_k: Optional[int] = None, top_p: Optional[float] = None, eos_token: Optional[int] = None,
                 use_cache: bool = True, compile: bool = False,
                 generator: Optional[torch.Generator] = None) -> Union[Tensor, tuple[Tensor, Memories, States]]:
        """Sample ``length - prime_len`` new tokens after prime (b, prime_len); returns only the new ones.

        ``length`` counts the prime (seed semantics; default max_seq_len + 1) and may be any size.
        temperature 0 is greedy; top_k / top_p filter after the seed's ``filter_thres`` top-k
        (pass filter_thres=None to disable it); rows that emit ``eos_token`` keep emitting it.
        ``use_cache=False`` decodes by the slow reference path. ``compile=True`` (CUDA) compiles the
        one-token step before its CUDA graph captures it: tens of seconds once per model (and once
        more for a second batch size, which then serves any), then about half the time per token
        (H200, bench/RESULTS.md). ``generator`` (a torch.Generator on the model's device) is the
        source of the sampling's randomness: the same seed, the same samples. The memories and
        states passed in are never modified.
        """
        from .generation import generate  # decoding imports the model's modules: resolved at call time

        length = self.max_seq_len + 1 if length is None else length
        return generate(self, prime, length, xl_memories=xl_memories, states=states, temperature=temperature,
                        filter_thres=filter_thres, top_k=top_k, top_p=top_p, eos_token=eos_token,
                        return_memories_and_states=return_memories_and_states, use_cache=use_cache,
                        compile=compile, generator=generator)

    @torch.no_grad()
    def stream(self, prime: Tensor, max_new_tokens: int, **kwargs) -> Iterator[Tensor]:
        """An iterator of the next token of every row, (b,), as each is sampled; kwargs as for ``generate``."""
        from .generation import stream  # as in generate

        return stream(self, prime, max_new_tokens, **kwargs)

    # ---- the computation ---------------------------------------------------------------------

    def positioned_memory(self, memories: Memories, index: int, rotary: tuple[Tensor, Tensor, Tensor],
                          dtype: torch.dtype, first_values: Optional[Tensor] = None
                          ) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        """Layer ``index``'s memory keys, [compressed | XL], qk-normed and rotated by ``rotary``
        (positions -M..-1), and its values, in ``dtype``; third, the XL values projected from the
        memories' inputs (None unless they hold them): layer 0's are the ``first_values`` that the
        layers above mix in (value_residual).

        The XL keys/values are the cached ones or, when the memories hold the layer's inputs
        (memory_kv_from_inputs), those inputs projected by the current weights: the same values
        until the weights change, but with a gradient to the projection (see the config). Cached
        values were mixed (value_residual) when their block ran; projected ones are mixed here.
        """
        attn = self.layers[index][0]
        xl = xl_values = None
        if memories.xl_inputs is not None:
            # the current pre-norm too, as Transformer-XL: its gain also learns from attention to memory
            k, v = attn.project_kv(attn.norm(memories.xl_inputs[index]), self.block_width)
            xl_values = attn.mix_values(v, first_values)
            xl = torch.stack((k, xl_values))
        memory_kv = memories.layer_keys_values(index, xl).to(dtype)
        return attn.position_keys(memory_kv[0], rotary), memory_kv[1], xl_values

    def memory_rotary(self, memories: Memories) -> tuple[Tensor, Tensor, Tensor]:
        """Rotary tables for the memories' positions -M..-1."""
        return self.rotary(-memories.length, memories.length)

    def forward_block(self, h: Tensor, memories: Memories, states: States,
                      cache: Optional[BlockContext] = None) -> tuple[Tensor, Memories, States]:
        """Run embeddings h (b, n, dim) of one block through every layer.

        Without a cache, h is a block from its start (n <= block_width). With a cache, h continues
        the block held in the cache (decoding), whose keys/values it extends. Returns the final
        hidden states and, when the block is now full, the memories with the block pushed and the
        states written by it; a partial block commits nothing.
        """
        block = WholeBlock(self, memories, states) if cache is None else cache
        n = h.shape[1]
        full = block.length + n == self.block_width
        rotary, mask = block.rotary(n), block.attention_mask(n)

        next_states = list(states)
        depth, half = len(self.layers), len(self.layers) // 2
        first_values, skips, x0 = None, [], h
        for index, layer in enumerate(self.layers):
            if self.skip_weights is not None and index >= depth - half:  # unet_skips: the mirror layer's output
                h = h + self.skip_weights[index - (depth - half)] * skips.pop()
            if self.embedding_mix is not None and index > 0:  # embedding_mixing: the block's embeddings again
                a, b = self.embedding_mix[2 * index - 2:2 * index]
                h = a * h + b * x0
            h, written, values = layer(h, self, index, block, rotary, mask, memories.knn, full, first_values)
            if index == 0:
                first_values = values  # value_residual: what the layers above mix in
            if self.skip_weights is not None and index < half:
                skips.append(h)
            if written is not None:
                next_states[self.writes_at[index + 1]] = written
        block.advance(n)

        if not full:
            return h, memories, states
        return h, push(memories, block.stacked_kv(), self.config, self.compressor, block.stacked_inputs()), next_states

    def logits(self, h: Tensor) -> Tensor:
        """Final norm and projection to token logits, soft-capped where ``logit_softcap`` says."""
        logits = self.to_logits(self.norm_out(h))
        cap = self.config.logit_softcap
        if cap is None:
            return logits
        # float32 at least (float64 stays float64): in bfloat16, tanh near its bound would round logits
        # close to the cap by ~cap / 256
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        return cap * torch.tanh(logits / cap)

    def forward(
        self,
        x: Tensor,
        return_loss: bool = False,
        xl_memories: Optional[Memories] = None,
        states: Optional[Sequence[Tensor]] = None,
        return_memories_and_states: Optional[bool] = None,
        *,
        reset: Optional[Tensor] = None,
        detach: bool = True,
    ) -> tuple[Tensor, Optional[Memories], Optional[States]]:
        """Process x (batch, n <= max_seq_len) block by block.

        xl_memories / states: what a previous call returned (None or [] to start afresh); the
            memories may also be the seed's list of per-layer tensors (see ``Memories.__getitem__``).
        return_memories_and_states: False returns (logits, None, None), as the seed did; True or
            None (the default) return them. (The seed's default returned them only when n was
            max_seq_len; ours always does.)
        reset: optional bool (batch,): rows that start a new document here, whose memories and
            states are cleared first.
        detach: return memories and states cut from the autograd graph (truncated backprop
            through time); False keeps the graph, so that a later segment's loss reaches this one
            (through the states alone with ``detach_block_memories``).
        Returns (logits (b, n, num_tokens) or the mean loss, memories, states). Only full blocks
        are committed to memories and states; a trailing partial block is not. The states
        returned are the caller's own tensors (never views of the initial state or of the states
        passed in). NaN or inf in the memories or states passed in are not checked for (a check
        would wait for the device every call): they give NaN logits.
        """
        if return_memories_and_states is not None and not isinstance(return_memories_and_states, bool):
            raise TypeError(f"return_memories_and_states must be a bool or None, got {return_memories_and_states!r}")
        self.check_tokens(x)
        check_bool("return_loss", return_loss)
        check_bool("detach", detach)
        x = x.long()  # nn.Embedding and the loss take int64 ids; a byte corpus is naturally uint8
        if return_loss:
            if x.shape[1] < 2:
                raise ValueError(f"with return_loss=True, x needs at least 2 tokens, got {x.shape[1]}")
            x, labels = x[:, :-1], x[:, 1:]
        if x.shape[1] > self.max_seq_len:
            raise ValueError(
                f"x has {x.shape[1]} tokens{' (after the loss shift)' if return_loss else ''}; "
                f"at most max_seq_len={self.max_seq_len} are allowed per call: pass longer sequences "
                f"segment by segment with the returned memories and states, or use RecurrentTrainerWrapper"
            )
        h = self.token_emb(x)
        memories, states = self.prepare(x.shape[0], xl_memories, states, reset)
        prepared = states

        outputs = []
        for block in h.split(self.block_width, dim=1):
            if self.activation_checkpointing and torch.is_grad_enabled():
                # keep only each block's inputs; recompute its activations in the backward pass
                block, memories, states = checkpoint(self.forward_block, block, memories, states, use_reentrant=False)
            else:
                block, memories, states = self.forward_block(block, memories, states)
            if self.config.detach_block_memories:
                memories = memories.detach_blocks()
            outputs.append(block)
        logits = self.logits(torch.cat(outputs, dim=1))

        if return_memories_and_states is False:
            memories = states = None
        else:
            # a state no block wrote is the initial state's expanded view or the caller's tensor: copy it
            states = [s.clone() if s is p else s for s, p in zip(states, prepared)]
            if detach:
                memories, states = memories.detach(), [s.detach() for s in states]
        if not return_loss:
            return logits, memories, states
        return self.loss(logits, labels), memories, states

    def loss(self, logits: Tensor, labels: Tensor, reduction: str = "mean") -> Tensor:
        """Cross-entropy of logits (b, n, num_tokens) against labels (b, n); positions labelled
        ``ignore_index`` count for nothing. ``reduction``: "mean" over the labelled positions (what
        ``return_loss=True`` gives) or "sum" (to average over several segments by their labels)."""
        # int64 targets, whatever integer type the caller's labels have (cross_entropy takes no other)
        return F.cross_entropy(logits.transpose(1, 2), labels.long(), ignore_index=self.config.ignore_index,
                               reduction=reduction)


class Layer(nn.Module):
    """One layer: its ``AttentionBlock`` and ``FeedForward``, registered as "0" and "1" so that the
    state dict keeps the seed's names (``layers.{i}.0.*``, ``layers.{i}.1.*``); ``layer[0]`` and
    ``attn, ff = layer`` read them. Not a ModuleList: FSDP2 in torch 2.11 refuses to shard any
    ModuleList, whatever its forward.

    ``forward_block`` runs a block through each layer by one call of this module, so that module
    hooks see each layer's work: FSDP all-gathers a layer's sharded weights just before its call
    and frees them after it (train.py --fsdp), which it could not do for bare method calls.
    """

    def __init__(self, attention: AttentionBlock, feed_forward: FeedForward) -> None:
        super().__init__()
        self.add_module("0", attention)
        self.add_module("1", feed_forward)

    def __getitem__(self, index: int) -> nn.Module:
        """0 (or -2): the attention block, 1 (or -1): the feed-forward."""
        if not isinstance(index, int) or not -len(self) <= index < len(self):
            raise IndexError(f"a layer holds 2 modules (0: attention, 1: feed-forward), got index {index!r}")
        return self._modules[str(index % len(self))]

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self._modules.values())

    def __len__(self) -> int:
        return len(self._modules)

    def forward(self, h: Tensor, model: BlockRecurrentTransformer, index: int, block: BlockContext,
                rotary: tuple[Tensor, Tensor, Tensor], mask: Optional[Mask], knn_store: Optional[KNNStore],
                full: bool, first_values: Optional[Tensor]) -> tuple[Tensor, Optional[Tensor], Tensor]:
        """h (b, n, dim) through layer ``index`` of model: attention over the block context's keys and
        values (and, in a kNN layer, over knn_store's entries), state reads, the state write when the
        block is ``full``, then the feed-forward. first_values: the first layer's values of these
        tokens (value_residual; None in the first layer). Returns the new h, the state this layer
        wrote (None if it wrote none) and its values of these tokens."""
        attn, ff = self
        layer = index + 1
        x_normed, q_raw, k, v = attn.project(h, block.previous_input(index))
        v = attn.mix_values(v, first_values)
        q, k_positioned = attn.position(q_raw, k, rotary)
        keys, values = block.extend(index, h, k_positioned, k, v)
        if layer in model.knn_at:
            out = attn.attend_with_memory(q_raw, q, keys, values, knn_store, model.knn_at[layer],
                                          causal=block.causal, mask=mask)
        else:
            out = attn.attend_block(q, keys, values, causal=block.causal, mask=mask)
        reads = [model.states[i].read(x_normed, block.view(i)) for i in model.reads_at[layer]]
        h = h + attn.output(out, reads, x_normed)
        written = None
        if full and layer in model.writes_at:
            i = model.writes_at[layer]
            written = model.states[i].write(block.view(i), *block.layer_kv(index))
        return h + ff(h), written, v


class WholeBlock:
    """What a block run from its start attends to (training, the reference path): its memories,
    positioned afresh, then its own keys/values. A ``BlockContext``, as ``DecodeCache`` is."""

    causal = True  # the block's queries over [memories | block], aligned lower-right
    length = 0  # a whole block starts at position 0

    def __init__(self, model: BlockRecurrentTransformer, memories: Memories, states: States) -> None:
        self.model, self.states = model, states
        self.memories, self.memory_rotary = memories, model.memory_rotary(memories)
        self.block_kv: list[Tensor] = []
        self.first_memory_values: Optional[Tensor] = None  # layer 0's XL values from inputs (value_residual)
        # the layers' inputs (before their norm), kept only when the memories take them (memory_kv_from_inputs)
        self.block_inputs: Optional[list[Tensor]] = [] if model.config.memory_kv_from_inputs else None
        self.views: dict[int, StateView] = {}

    def rotary(self, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """Rotary tables for the block's positions 0..n-1."""
        return self.model.rotary(0, n)

    def attention_mask(self, n: int) -> Optional[Mask]:
        """None (no mask: flash) unless some row's memory holds entries from before its reset. Without
        compressed memories a row sees the newest whole blocks of its XL memory, from none to all
        (``MemoryRows``: still flash); else a boolean mask over the entries."""
        config = self.model.config
        if not config.use_compressed_mem:
            visible = self.memories.visible_entries(config)
            return None if visible is None else MemoryRows(visible)
        mask = self.memories.memory_mask(config)
        return None if mask is None else F.pad(mask, (0, n), value=True)[:, None, None, :]

    def previous_input(self, index: int) -> None:
        """None: a whole block's first token has no predecessor in it (token_shift shifts in zeros)."""
        return None

    def extend(self, index: int, h: Tensor, k_positioned: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Layer ``index``'s keys/values: positioned memories, then the block's own. Called inside the
        layer's module call, so a memory projected from its inputs uses weights FSDP has gathered."""
        self.block_kv.append(torch.stack((k, v)))
        if self.block_inputs is not None:  # the residual stream's dtype: normed afresh, it gives the same keys
            self.block_inputs.append(h)
        memory_k, memory_v, xl_values = self.model.positioned_memory(self.memories, index, self.memory_rotary,
                                                                     k.dtype, self.first_memory_values)
        if index == 0:
            self.first_memory_values = xl_values
        return torch.cat((memory_k, k_positioned), dim=-2), torch.cat((memory_v, v), dim=-2)

    def view(self, i: int) -> StateView:
        """State i as this block reads and writes it (computed once, at its first read)."""
        if i not in self.views:
            self.views[i] = self.model.states[i].view(self.states[i])
        return self.views[i]

    def layer_kv(self, index: int) -> tuple[Tensor, Tensor]:
        """Layer ``index``'s raw block keys and values (what the state write reads)."""
        return tuple(self.block_kv[index])

    def stacked_kv(self) -> Tensor:
        """(depth, 2, b, kv_heads, n, d): every layer's raw block keys/values, to push to the memories."""
        return torch.stack(self.block_kv)

    def stacked_inputs(self) -> Optional[Tensor]:
        """(depth, b, n, dim): every layer's block inputs, to push with memory_kv_from_inputs; else None."""
        return None if self.block_inputs is None else torch.stack(self.block_inputs)

    def advance(self, n: int) -> None:
        """Nothing to keep: a whole block is not continued."""
