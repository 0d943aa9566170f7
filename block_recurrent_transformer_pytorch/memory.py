"""Transformer-XL and compressed memories: per-layer FIFOs of past keys/values.

Every layer keeps the raw (un-normalised, un-rotated) keys/values of the previous block (the XL
memory; of the previous ``xl_memory_blocks`` blocks, oldest first). With compressed memory on, the
block pushed out of the XL memory is compressed by a
strided convolution (``compressed_mem_factor`` keys become one) into a second FIFO of half a block,
as in the Compressive Transformer and the seed. A block's queries attend to
[compressed | XL | block], oldest first.

With ``memory_kv_from_inputs`` the XL memory also keeps each layer's inputs of the previous
block (``xl_inputs``, before the layer's norm), from which the model makes its keys/values afresh
through the current norm and projection (see the config); the cached keys/values are still
pushed, compressed and written to the kNN store.

Rows of a batch can start a new document at any call (``reset``): their older entries stay in
the tensors (all rows share one length) but are masked out of attention until pushed out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from collections.abc import Iterator, Sequence
from typing import Optional, Union

import torch
from einops import rearrange
from torch import Tensor, nn

from .config import BlockRecurrentConfig
from .knn_memory import KNNMemory, KNNStore, empty_knn_memory


@dataclass
class Memories:
    """The memories of every layer, as returned by and passed back to the model.

    xl:         (depth, 2, batch, kv_heads, xl_len, dim_head)   keys [.., 0, ..] and values [.., 1, ..]
    compressed: (depth, 2, batch, kv_heads, compressed_len, dim_head), or None when compression is off
    blocks_since_reset: (batch,) full blocks pushed since each row's last reset, while some row's
        memory still holds entries from before its reset; None when every entry is valid.
    blocks_until_valid: pushes until no row holds pre-reset entries (then the mask is dropped).
    knn: the kNN layers' long-range store (``knn_memory.KNNMemory``, or ``faiss_memory.FaissKNNMemory``
        with knn_backend="faiss"), or None when the model has no kNN layer.
    xl_inputs: (depth, batch, xl_len, dim) every layer's inputs (the residual stream before the
        layer's norm) at the XL memory's positions (config ``memory_kv_from_inputs``), or None when
        the option is off.
    """

    xl: Tensor
    compressed: Optional[Tensor] = None
    blocks_since_reset: Optional[Tensor] = None
    blocks_until_valid: int = 0
    knn: Optional[KNNStore] = None
    xl_inputs: Optional[Tensor] = None  # last: older positional calls and saved Memories stay valid

    @property
    def batch_size(self) -> int:
        """Rows of the batch these memories belong to."""
        return self.xl.shape[2]

    @property
    def device(self) -> torch.device:
        """Where the memories are."""
        return self.xl.device

    @property
    def length(self) -> int:
        """Entries per layer, [compressed | XL]: what a block's queries attend to before the block."""
        return self.xl.shape[-2] + (0 if self.compressed is None else self.compressed.shape[-2])

    # The seed returned a list with one (2, batch, length, dim_head) tensor per layer, keys and values
    # stacked first, [compressed | XL] along the length: Memories reads as that list too.

    def __len__(self) -> int:
        """The depth: one memory per layer, as the seed's list."""
        return self.xl.shape[0]

    def __getitem__(self, index: Union[int, slice]) -> Union[Tensor, list[Tensor]]:
        """Layer ``index``'s memory in the seed's layout: (2, batch, length, dim_head), keys then
        values, [compressed | XL] along the length ((2, batch, kv_heads, length, dim_head) with
        kv_heads > 1). A slice gives a list."""
        layers = self.keys_values()
        if layers.shape[3] == 1:
            layers = layers.squeeze(3)
        if isinstance(index, slice):
            return list(layers[index].unbind(0))
        return layers[index]

    def __iter__(self) -> Iterator[Tensor]:
        """The layers' memories in the seed's layout (see ``__getitem__``)."""
        return iter(self[:])

    def to(self, *args, **kwargs) -> "Memories":
        """Memories moved/cast as ``Tensor.to`` would (the reset counters and kNN positions keep their dtype)."""
        xl = self.xl.to(*args, **kwargs)
        device = xl.device
        knn = self.knn.to(*args, **kwargs) if isinstance(self.knn, KNNMemory) else self.knn
        return replace(self, xl=xl, compressed=None if self.compressed is None else self.compressed.to(*args, **kwargs),
                       blocks_since_reset=None if self.blocks_since_reset is None else self.blocks_since_reset.to(device),
                       knn=knn, xl_inputs=None if self.xl_inputs is None else self.xl_inputs.to(*args, **kwargs))

    def keys_values(self) -> Tensor:
        """(depth, 2, batch, kv_heads, M, dim_head): [compressed | XL] of every layer."""
        return _after_compressed(self.compressed, self.xl)

    def layer_keys_values(self, index: int, xl: Optional[Tensor] = None) -> Tensor:
        """(2, batch, kv_heads, M, dim_head): layer ``index``'s [compressed | XL]; ``xl`` (2, batch,
        kv_heads, xl_len, dim_head), if given, in place of the cached XL keys/values."""
        return _after_compressed(None if self.compressed is None else self.compressed[index],
                                 self.xl[index] if xl is None else xl)

    def detach(self) -> "Memories":
        """Cut the autograd graph (memories are carried between segments without gradient)."""
        return replace(self.detach_blocks(), compressed=None if self.compressed is None else self.compressed.detach())

    def detach_blocks(self) -> "Memories":
        """Cut the graph back to the blocks the XL memory holds (their keys/values and inputs), but
        not the compressed memory's: it is made from XL entries already cut this way, so it leads
        back to the compressor's weights alone, which learn from the blocks that read it."""
        return replace(self, xl=self.xl.detach(), xl_inputs=None if self.xl_inputs is None else self.xl_inputs.detach())

    def reset(self, rows: Tensor, config: BlockRecurrentConfig) -> "Memories":
        """Forget everything in the rows where ``rows`` (bool, (batch,)) is True."""
        if not bool(rows.any()):  # one host sync per call with a reset, never per block
            return self
        knn = None if self.knn is None else self.knn.reset(rows)
        since = self.blocks_since_reset
        if since is None:
            since = torch.full_like(rows, blocks_to_refill(config), dtype=torch.long)
        since = torch.where(rows, torch.zeros_like(since), since)
        return replace(self, blocks_since_reset=since, blocks_until_valid=blocks_to_refill(config), knn=knn)

    def without_recent(self, config: BlockRecurrentConfig) -> "Memories":
        """What memory dropout leaves: no XL or compressed memories, and a kNN store that also holds
        the XL memory's block, as if it had been evicted. The store holds up to knn_memory_size entries
        of each row's document, which a regulariser of the XL memory has no reason to throw away."""
        knn = self.knn
        if knn is not None and self.xl.shape[-2] > 0:
            knn = write_evicted(knn, self.xl, self.visible_rows(), config)
        return empty_memories(config, self.batch_size, self.device, self.xl.dtype, knn=knn)

    def visible_rows(self) -> Optional[Tensor]:
        """(batch,) bool: the rows that pushed a block since their last reset; None when no row holds
        entries from before its reset. With a one-block XL memory, the rows whose memory holds their
        current document (what the kNN store takes when that block leaves)."""
        return None if self.blocks_since_reset is None else self.blocks_since_reset > 0

    def visible_entries(self, config: BlockRecurrentConfig) -> Optional[Tensor]:
        """(batch,) long: the newest XL entries of each row's current document (whole blocks); None
        when every entry is its row's. Without compressed memories, all a row may see of them
        (see ``WholeBlock.attention_mask``)."""
        if self.blocks_since_reset is None:
            return None
        return (self.blocks_since_reset * config.block_width).clamp(max=self.xl.shape[-2])

    def memory_mask(self, config: BlockRecurrentConfig) -> Optional[Tensor]:
        """(batch, M) bool over [compressed | XL]: True where an entry belongs to the row's current
        document. None when every entry does (the common case: no mask, so flash can run)."""
        if self.blocks_since_reset is None:
            return None
        since = self.blocks_since_reset[:, None]
        xl_len = self.xl.shape[-2]
        parts = [torch.arange(xl_len, device=self.device) >= xl_len - self.visible_entries(config)[:, None]]
        if self.compressed is not None:
            comp_len = self.compressed.shape[-2]
            per_block = config.block_width // config.compressed_mem_factor
            # the newest blocks are in the XL memory
            valid_comp = ((since - config.xl_memory_blocks) * per_block).clamp(0, comp_len)
            parts.insert(0, torch.arange(comp_len, device=self.device) >= comp_len - valid_comp)
        return torch.cat(parts, dim=-1)


def _after_compressed(compressed: Optional[Tensor], xl: Tensor) -> Tensor:
    """[compressed | xl] along the length (the order a block's queries see them), in xl's dtype."""
    if compressed is None:
        return xl
    return torch.cat((compressed.to(xl.dtype), xl), dim=-2)


def blocks_to_refill(config: BlockRecurrentConfig) -> int:
    """Full blocks that must be pushed after a reset before no pre-reset entry is left."""
    blocks = config.xl_memory_blocks
    if config.use_compressed_mem:
        blocks += math.ceil(config.compressed_mem_len / (config.block_width // config.compressed_mem_factor))
    return blocks


def empty_memories(config: BlockRecurrentConfig, batch: int, device: torch.device, dtype: torch.dtype,
                   knn: Optional[KNNStore] = None) -> Memories:
    """Memories holding nothing yet (zero-length FIFOs), or only ``knn``, a kNN store kept."""
    shape = (config.depth, 2, batch, config.kv_heads, 0, config.dim_head)
    compressed = torch.empty(shape, device=device, dtype=dtype) if config.use_compressed_mem else None
    inputs = torch.empty(config.depth, batch, 0, config.dim, device=device, dtype=dtype) \
        if config.memory_kv_from_inputs else None
    if knn is None:
        knn = empty_knn_memory(config, batch, device, dtype)
    return Memories(xl=torch.empty(shape, device=device, dtype=dtype), compressed=compressed, knn=knn,
                    xl_inputs=inputs)


class MemoryCompressor(nn.Module):
    """Strided 1-d convolution over time, separately per layer, key/value and head."""

    def __init__(self, config: BlockRecurrentConfig) -> None:
        super().__init__()
        self.groups = config.depth * 2 * config.kv_heads
        channels = self.groups * config.dim_head
        factor = config.compressed_mem_factor
        self.conv = nn.Conv1d(channels, channels, factor, stride=factor, groups=self.groups)

    def forward(self, kv: Tensor) -> Tensor:
        """(depth, 2, b, kv_heads, n, d) -> (depth, 2, b, kv_heads, n // factor, d)."""
        depth, two, _, heads, _, _ = kv.shape
        x = rearrange(kv, "l t b h n d -> b (l t h d) n")
        x = self.conv(x)
        return rearrange(x, "b (l t h d) n -> l t b h n d", l=depth, t=two, h=heads).to(kv.dtype)


def push(memories: Memories, new_kv: Tensor, config: BlockRecurrentConfig,
         compressor: Optional[MemoryCompressor], new_inputs: Optional[Tensor] = None) -> Memories:
    """Append one full block of keys/values (depth, 2, b, kv_heads, block_width, d) to the FIFOs, and
    with ``memory_kv_from_inputs`` the layers' inputs of that block (depth, b, block_width, dim)."""
    xl = torch.cat((memories.xl, new_kv), dim=-2)
    evicted, xl = xl[..., :-config.xl_memory_len, :], xl[..., -config.xl_memory_len:, :]
    inputs = None
    if config.memory_kv_from_inputs:  # the inputs of the XL memory's positions: its last xl_memory_len
        inputs = torch.cat((memories.xl_inputs, new_inputs), dim=-2)[..., -config.xl_memory_len:, :]
    compressed = memories.compressed
    if compressor is not None and evicted.shape[-2] > 0:
        compressed = torch.cat((compressed, compressor(evicted)), dim=-2)[..., -config.compressed_mem_len:, :]
    since, until = memories.blocks_since_reset, memories.blocks_until_valid
    knn = memories.knn
    if knn is not None and evicted.shape[-2] > 0:
        knn = write_evicted(knn, evicted, memories.visible_rows(), config)
    if since is not None:
        since, until = since + 1, until - 1
        if until == 0:
            since = None
    return Memories(xl=xl, compressed=compressed, blocks_since_reset=since, blocks_until_valid=until, knn=knn,
                    xl_inputs=inputs)


def write_evicted(knn: KNNStore, evicted: Tensor, visible_rows: Optional[Tensor],
                  config: BlockRecurrentConfig) -> KNNStore:
    """The store with a block leaving the XL memory (depth, 2, b, kv_heads, n, d) written: the kNN
    layers' keys/values of it. The block belongs to a row's current document in the rows that pushed
    a block since their reset (``Memories.visible_rows``; None: every row)."""
    layers = [layer - 1 for layer in config.knn_layers]
    return knn.write(evicted[layers, 0], evicted[layers, 1], visible_rows)


def from_layer_list(layers: Sequence[Tensor], config: BlockRecurrentConfig) -> Memories:
    """Memories from the seed's list: one tensor per layer, (2, batch, length, dim_head) (or
    (2, batch, kv_heads, length, dim_head)), [compressed | XL] along the length. The XL memory is
    the last xl_memory_len entries (block_width in the seed), the compressed memory what comes before
    (as the seed splits it)."""
    if config.knn_layers:
        raise ValueError("xl_memories: a list of tensors cannot carry the kNN store of knn_layers "
                         f"{config.knn_layers}; pass the Memories object the model returned")
    if config.memory_kv_from_inputs:
        raise ValueError("xl_memories: a list of tensors cannot carry the layer inputs (xl_inputs) that "
                         "memory_kv_from_inputs=True projects; pass the Memories object the model returned")
    if len(layers) != config.depth or not all(isinstance(t, Tensor) for t in layers):
        raise ValueError(f"xl_memories as a list must hold one tensor per layer (depth={config.depth}), "
                         f"got {len(layers)} of {sorted({type(t).__name__ for t in layers})}")
    shapes = {tuple(t.shape) for t in layers}
    shape = next(iter(shapes))
    if len(shapes) != 1 or len(shape) not in (4, 5) or shape[0] != 2:
        raise ValueError(f"xl_memories as a list must hold one (2, batch, length, dim_head) tensor per layer, all "
                         f"of one shape (keys and values stacked first, as the seed's), got shapes {sorted(shapes)}")
    kv = torch.stack([t if t.ndim == 5 else t.unsqueeze(2) for t in layers])  # (depth, 2, b, kv_heads, M, d)
    length = kv.shape[-2]
    xl_len = min(length, config.xl_memory_len)
    if not config.use_compressed_mem:
        return Memories(xl=kv)  # check_memories rejects more than xl_memory_len entries
    return Memories(xl=kv[..., length - xl_len:, :], compressed=kv[..., :length - xl_len, :])


def check_memories(memories: object, config: BlockRecurrentConfig, batch: int, device: torch.device) -> Memories:
    """Raise a clear error unless ``memories`` is what this model returned for this batch."""
    if not isinstance(memories, Memories):
        raise TypeError(
            f"xl_memories must be the Memories object the model returned (or None), got {type(memories).__name__}"
        )
    expected = (config.depth, 2, batch, config.kv_heads)
    for name, t, capacity in (("xl", memories.xl, config.xl_memory_len),
                              ("compressed", memories.compressed, config.compressed_mem_len)):
        if t is None:
            if name == "compressed" and config.use_compressed_mem:
                raise ValueError("xl_memories has no compressed memory but the model uses compressed memory")
            continue
        if name == "compressed" and not config.use_compressed_mem:
            raise ValueError("xl_memories holds compressed memory but the model does not use compressed memory")
        if t.ndim != 6 or tuple(t.shape[:4]) != expected or t.shape[-1] != config.dim_head or t.shape[-2] > capacity:
            raise ValueError(
                f"xl_memories.{name} must have shape (depth={config.depth}, 2, batch={batch}, "
                f"kv_heads={config.kv_heads}, length<={capacity}, dim_head={config.dim_head}), got {tuple(t.shape)}"
            )
        if t.device != device:
            raise ValueError(f"xl_memories.{name} is on {t.device}, the input is on {device}")
        if not t.is_floating_point():
            raise TypeError(f"xl_memories.{name} must hold floating-point keys/values, got dtype {t.dtype}")
    # attention would run over any length, with the memory's positions shifted: logits silently wrong
    if memories.xl.shape[-2] % config.block_width != 0:
        raise ValueError(f"xl_memories.xl must hold whole blocks: a multiple of block_width={config.block_width} "
                         f"positions up to xl_memory_blocks={config.xl_memory_blocks} of them (0: none yet), got "
                         f"{memories.xl.shape[-2]}")
    _check_xl_inputs(memories, config, batch, device)
    if bool(config.knn_layers) != (memories.knn is not None):
        raise ValueError(f"xl_memories {'lacks' if config.knn_layers else 'holds'} a kNN store, but the model "
                         f"has knn_layers={config.knn_layers}")
    if memories.knn is not None:
        memories.knn.check(config, batch, device)
    return memories


def _check_xl_inputs(memories: Memories, config: BlockRecurrentConfig, batch: int, device: torch.device) -> None:
    """The layer inputs are there exactly when the model projects its memory from them, one per XL position."""
    inputs = memories.xl_inputs
    if inputs is None:
        if config.memory_kv_from_inputs:
            raise ValueError("xl_memories.xl_inputs is None but the model has memory_kv_from_inputs=True (it "
                             "projects the memory's keys/values from the layer inputs kept there): pass the Memories "
                             "a model with memory_kv_from_inputs=True returned")
        return
    if not config.memory_kv_from_inputs:
        raise ValueError("xl_memories holds xl_inputs (layer inputs) but the model has memory_kv_from_inputs=False")
    expected = (config.depth, batch, memories.xl.shape[-2], config.dim)
    if not isinstance(inputs, Tensor) or tuple(inputs.shape) != expected:
        raise ValueError(f"xl_memories.xl_inputs must have shape (depth={config.depth}, batch={batch}, "
                         f"xl_len={expected[2]} (as xl), dim={config.dim}), got "
                         f"{tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__}")
    if inputs.device != device:
        raise ValueError(f"xl_memories.xl_inputs is on {inputs.device}, the input is on {device}")
    if not inputs.is_floating_point():
        raise TypeError(f"xl_memories.xl_inputs must hold floating-point inputs, got dtype {inputs.dtype}")


# Memories (and the torch kNN store in them) load with torch.load's default weights_only=True
torch.serialization.add_safe_globals([Memories, KNNMemory])
