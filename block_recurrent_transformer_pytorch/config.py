"""The model's hyperparameters, validated once, in one place."""

from __future__ import annotations

import functools
import math
import numbers
import operator
from dataclasses import asdict, dataclass, fields
from collections.abc import Sequence
from typing import Literal, Optional, Union

from beartype import BeartypeConf, beartype

# Consecutive slots of the kNN store that knn_retrieval="query_routed" routes a query to as one
# unit (knn_memory.routed_search): a sixteenth of the exact search's scores, in contiguous runs to gather.
KNN_ROUTE_GROUP = 16

# Type-check public constructors; a wrong type raises a TypeError naming the argument and value.
typechecked = beartype(conf=BeartypeConf(violation_type=TypeError))


def check_bool(name: str, value: object) -> None:
    """Raise a TypeError naming the flag unless it is a bool: a truthy stand-in (the string "no")
    would silently act as True."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool (True or False), got {value!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _layers_tuple(name: str, value: Sequence[int], depth: int) -> tuple[int, ...]:
    """A sequence of 1-based layer numbers as a tuple, checked to lie within 1..depth."""
    layers = tuple(value)
    if not all(_is_int(layer) for layer in layers):
        raise TypeError(f"{name} must contain only ints, got {layers!r}")
    if not all(1 <= layer <= depth for layer in layers):
        raise ValueError(f"{name} must lie in 1..depth={depth} (layers are numbered from 1), got {layers!r}")
    return layers


def feedforward_width(dim: int, mult: float, glu: bool) -> int:
    """Hidden units of a feed-forward: GEGLU's 2/3 * mult * dim (its input projection makes two per
    unit), GELU's mult * dim; so both hold about 2 * mult * dim ** 2 weights (exactly, where the
    widths are whole numbers)."""
    return int(dim * mult * 2 / 3) if glu else int(dim * mult)


# The fields by kind, in declaration order: what __post_init__ checks and coerce_seed_values converts.
_POSITIVE_INT_FIELDS = ("num_tokens", "dim", "depth", "dim_head", "heads", "kv_heads", "max_seq_len", "block_width",
                        "xl_memory_blocks", "compressed_mem_factor", "xpos_scale_base", "knn_memory_size", "knn_top_k",
                        "knn_route_groups")
_INT_FIELDS = frozenset((*_POSITIVE_INT_FIELDS, "num_state_vectors", "ignore_index", "rotary_dim"))  # checked apart
_BOOL_FIELDS = ("all_layers_qk_rmsnorm", "recurrent_layers_qk_rmsnorm", "use_flash_attn", "use_compressed_mem",
                "state_update_bias", "memory_kv_from_inputs", "zero_init_state_reads", "detach_state_write_kv",
                "detach_block_memories", "plain_output_init", "ff_glu", "token_shift", "value_residual",
                "unet_skips", "zero_init_output_projections", "embedding_mixing", "attention_gate")
_NUMBER_FIELDS = ("qk_rmsnorm_scale", "ff_mult", "rotary_theta", "embedding_init_std", "fixed_gate_retention")
_OPTIONAL_NUMBER_FIELDS = ("fixed_gate_max_half_life", "logit_softcap")  # None or a number, checked apart
# the options that join earlier layers (or the embeddings) to later ones through learned mixing weights
MIXING_OPTIONS = ("value_residual", "unet_skips", "embedding_mixing")
_LAYER_FIELDS = frozenset(("recurrent_layers", "read_recurrent_layers", "knn_layers"))
MAX_LOGIT_SOFTCAP = 1e4  # logit_softcap: far past any logit a model produces, far below float32's overflow
MAX_GATE_HALF_LIFE = 1e6  # blocks; float32 keeps 1 - g = ln 2 / h apart from 0 up to about 1e7


@typechecked
@dataclass
class BlockRecurrentConfig:
    """Every hyperparameter of a BlockRecurrentTransformer; the seed package's names and defaults.

    Layers are numbered from 1. The XL memory holds the previous ``xl_memory_blocks`` blocks (one in
the seed: ``block_width`` keys/values per layer); the compressed memory, when on, half a block of compressed ones. ``recurrent_layers`` are the layers that hold (write) a recurrent
    state; ``read_recurrent_layers[i]`` is the layer that reads the state written by
    ``recurrent_layers[i]`` (by default the same layer; it may be lower, never higher).
    ``knn_retrieval`` picks the ``knn_top_k`` entries of the kNN store each query attends:
    "exact", its best of the whole store; "query_routed", its best within the ``knn_route_groups``
    groups of KNN_ROUTE_GROUP consecutive entries whose mean key it scores highest (a sixteenth of
    the scores); "routed", CoLT5's learned router, one choice per block from the entries alone.
    """

    num_tokens: int
    dim: int
    depth: int
    dim_head: int = 64
    heads: int = 8
    kv_heads: int = 1
    # qk-rmsnorm in every layer's attention, not only the recurrent and kNN layers': the attention logits'
    # scale is then set by the temperature, not by the query and key weights' norms. Trained with Muon,
    # 0.016-0.018 bits/byte better in the long-documents preset (bench/RESULTS.md, thirty-first session).
    all_layers_qk_rmsnorm: bool = False
    # qk-rmsnorm in the recurrent layers' attention over [memories | block] (the seed's: always). The
    # state's own attention (its reads and writes) normalises its queries and keys either way. False
    # gives a recurrent layer the plain scaled dot products of the others, so that it differs from
    # them by its state alone. Measured level with True in the long-documents preset (-0.0003 and
    # -0.0021 bits/byte at two seeds, same initial weights; bench/RESULTS.md, tenth session).
    recurrent_layers_qk_rmsnorm: bool = True
    qk_rmsnorm_scale: Union[int, float] = 8.0
    ff_mult: Union[int, float] = 4
    # The feed-forward's kind. True (the seed's): GEGLU, hidden width 2/3 * ff_mult * dim; False: GELU,
    # hidden width ff_mult * dim (x-transformers' default kind, here without biases). About the same
    # parameters at the same ff_mult (exactly where 2/3 * ff_mult * dim is whole).
    ff_glu: bool = True
    max_seq_len: int = 1024
    block_width: int = 512
    # Blocks the XL memory holds: a block's queries attend the keys/values of this many blocks before
    # it (then its own). 1 is the seed's. More reaches further back at the cost of attention over
    # more keys; after a document reset a row sees the blocks of its new document alone (one
    # variable-length flash call gives each row its own keys). Why try it: x-transformers' XL scores 0.043
    # bits/byte better with a window of 1024 + 1024 than with 512 + 512 over five seeds, and the held-out
    # files repeat themselves 4-16 KiB back (bench/RESULTS.md); the compressed memory that was to
    # reach there measured far worse. In the long-documents preset, 2 (100M tokens, paired, seeds 0
    # and 1): 0.002 worse and 0.013 better, about 30% slower; not adopted (bench/RESULTS.md, twentieth
    # session). Not with knn_layers (the kNN store takes the block leaving a one-block XL memory whole).
    xl_memory_blocks: int = 1
    recurrent_layers: Optional[Sequence[int]] = None
    read_recurrent_layers: Optional[Sequence[int]] = None
    num_state_vectors: Optional[int] = None
    gate_type: Literal["fixed", "lstm"] = "fixed"
    # The fixed gate's initial retention: the share of the state each block keeps, sigmoid of a
    # learned per-channel bias that starts at logit(fixed_gate_retention) (plus N(0, 0.1) noise).
    # 0.5 (the seed's) halves what the state holds every block; 0.95 keeps a fifth of it 32 blocks on.
    fixed_gate_retention: Union[int, float] = 0.5
    # None: every channel starts at fixed_gate_retention (plus the noise). A number H in 1..1e6: the
    # channels start spread over time scales instead, half-lives (in blocks) log-spaced from 1
    # (retention 0.5, the seed's mean) to H (retention 0.5 ** (1 / H)), so some channels carry what they
    # are written far past the XL window while others turn over every block, and training moves each
    # from there. Why try it: at the seed's 0.5 a write keeps an eighth of its weight three blocks on,
    # past the XL window, and in the long-documents preset the learned retention stayed at 0.50-0.53
    # through training (bench/RESULTS.md, sixteenth session). Measured worse: H = 64 cost 0.017
    # bits/byte in the preset with segments of four blocks (paired, 100M tokens; seventeenth session).
    fixed_gate_max_half_life: Optional[Union[int, float]] = None
    # True: the output projection's weights that take the state reads start at zero, so that the
    # model starts as the same model without them and its first steps train alike (a state read
    # of untrained state vectors is noise in the residual stream); False (the seed's): torch's default.
    zero_init_state_reads: bool = False
    # True: the state's write reads the block's keys/values without passing its gradient back into
    # them, so the gradient a later read sends into the state stops at the states' parameters (what
    # the write takes from a block, how the gate keeps it): none reaches the writing block's keys/values
    # or the layers below them, which the block's own attention trains. The same logits; False (the
    # seed's): the gradient reaches both. Measured level (paired, two seeds, blocks of 512; bench/RESULTS.md,
    # fifteenth session).
    detach_state_write_kv: bool = False
    # True: the XL memories a block hands to the next block carry no gradient, inside a call as between
    # calls (Transformer-XL's stop-gradient at every block; the compressor still learns from the
    # compressed memory), while the states keep theirs. A segment of k blocks then still trains the
    # state's write for reads up to k - 1 blocks on, but a block's loss reaches the earlier blocks of
    # its call only through the states: their reads, and their writes' keys/values unless
    # detach_state_write_kv. Why try it: in the long-documents preset with the state's reads held at
    # zero, segments of four blocks (8 x 4096) scored 0.076 bits/byte worse than 16 x 2048 (one seed,
    # unpaired; bench/RESULTS.md, seventeenth session). Measured worse in the preset itself (16 x 2048,
    # 100M tokens, paired, seed 0): 0.013, and its state's reads then cost 0.002 (eighteenth session).
    # The same logits; False (the seed's): the gradient also reaches the earlier blocks through their
    # keys/values in the memory.
    detach_block_memories: bool = False
    # How a layer that reads states initialises its output projection, which takes the attention
    # output and the state reads side by side. False (the seed's): torch's default for the wider
    # projection, U(+-1/sqrt((1 + reads) * heads * dim_head)), so its attention output starts
    # 1/sqrt(1 + reads) as large as in a layer that reads no state. True: that draw scaled by
    # sqrt(1 + reads) to a plain layer's U(+-1/sqrt(heads * dim_head)), for the attention output and
    # each state read alike; every other weight is drawn as with False.
    plain_output_init: bool = False
    knn_layers: Sequence[int] = ()
    knn_memory_size: int = 262144
    knn_top_k: int = 32
    knn_retrieval: Literal["exact", "query_routed", "routed"] = "exact"
    knn_route_groups: int = 32  # query_routed: groups of KNN_ROUTE_GROUP entries each query searches
    knn_backend: Literal["torch", "faiss"] = "torch"
    ignore_index: int = -100
    use_flash_attn: bool = False
    use_compressed_mem: bool = False
    compressed_mem_factor: int = 4
    xpos_scale_base: int = 512
    rotary_theta: Union[int, float] = 10000.0
    state_update_bias: bool = False  # a bias on the state update's projection (the seed's; see from_seed)
    # Standard deviation of the token embeddings' initial values. 1.0 is torch's nn.Embedding default
    # and the seed's; 0.02 lets the layers' outputs matter against the embedding from the first step
    # and learns far faster (long C files, 30M tokens: 1.10 against 1.83 bits/byte, bench/RESULTS.md).
    embedding_init_std: Union[int, float] = 1.0
    # Channels of each head that rotary positions rotate (even, at most dim_head); None: all of them,
    # as the seed. The rest match by content alone; x-transformers rotates half (dim_head // 2).
    rotary_dim: Optional[int] = None
    # Where the XL memory's keys/values come from. False (the seed's): each layer's keys/values of the
    # previous block, cached as computed then, so across a segment boundary (where the memories are
    # detached) the key/value projection gets no gradient from the queries that attend to memory.
    # True (Transformer-XL's, x-transformers'): the memories also keep each layer's inputs of that
    # block (the residual stream, before the layer's norm), and every block norms and projects them
    # to keys/values with the current weights, so the norm and the projection learn from attention
    # to memory too. Costs those inputs (dim per position and layer, in the residual stream's dtype)
    # and one norm and key/value projection of the memory per layer and block; the same logits.
    memory_kv_from_inputs: bool = False
    # True: the second half of the channels of each attention's normed input comes from the token
    # before (zero for a block's first token), so every query, key and value also sees its
    # predecessor (RWKV's token shift; x-transformers' shift_tokens=1, here on the attention's
    # projection alone: the state reads and the feed-forward take the unshifted input).
    # Why try it: a key that knows its predecessor lets one layer find "the token after the last
    # time this token came" (Olsson et al. 2022, smeared keys), and byte-level models learn that
    # copying late, after a plateau near 2 bits/byte. No parameters, so it keeps the initial draw.
    # Measured in the long-documents preset (100M tokens, paired, seeds 0 and 1): it left the plateau
    # 100 steps sooner at both, yet ended 0.005 and 0.023 bits/byte worse (bench/RESULTS.md, nineteenth
    # session). False (the seed's): each token's own input alone.
    token_shift: bool = False
    # True: every layer above the first mixes the first layer's values of the same tokens into its own,
    # v = a * v + b * v_first, with a learned pair (a, b) per layer starting at (0.5, 0.5) (ResFormer's
    # value residual, Zhou et al. 2024; modded-nanogpt's): the first layer's token-level values stay
    # within reach of every layer's attention, which deep layers otherwise blur. The memories mix
    # alike (stored values are already mixed; values projected afresh from inputs, with
    # memory_kv_from_inputs, are mixed with the first layer's, projected afresh too), and so do the
    # values the state's write reads. Ten parameters at depth 6, none drawn at random, so the other
    # weights keep their draw. False (the seed's): each layer's own values.
    value_residual: bool = False
    # True: U-net skips: the output of each of the first depth // 2 layers is added again, times a
    # learned scalar starting at 1, to the input of its mirror layer in the second half (the last
    # layer's input gets the first layer's output, and so on inwards; modded-nanogpt's), a shorter
    # path from early features to the late layers. depth // 2 parameters, none drawn at random.
    # False (the seed's): a plain residual stream.
    unet_skips: bool = False
    # True: every layer above the first takes a * h + b * x0 as its input, where h is the residual stream
    # and x0 the block's token embeddings (what the first layer takes), with a learned pair (a, b) per
    # layer starting at (1, 0) (modded-nanogpt's x0 lambdas): the tokens themselves stay within reach of
    # every layer whatever the layers below wrote. The mixed input is the one a layer's memory keeps.
    # 2 * (depth - 1) parameters starting where the plain model is, none drawn at random, so the other
    # weights keep their draw and the model starts as the one without. False (the seed's): the plain
    # residual stream.
    embedding_mixing: bool = False
    # A number c: the output logits are soft-capped, c * tanh(logits / c) (in float32 at least), so no
    # logit exceeds c in size (Gemma 2's, modded-nanogpt's): near c the slope of tanh falls to zero, so
    # training gains little by pushing a logit further and the head is not driven to grow its outputs.
    # A small cap also bounds the best loss a token can reach, log(1 + (V - 1) * exp(-2c)) nats for V
    # tokens: 4.5 at c = 0.5 with 256 tokens, negligible at 15. No parameters, so the weights keep
    # their draw. None (the seed's): the plain logits.
    logit_softcap: Optional[Union[int, float]] = None
    # True: every layer's attention and feed-forward output projections start at zero (modded-nanogpt's),
    # so every layer starts as the identity on the residual stream and the model as embeddings -> head;
    # the output projections learn at the first step, the rest from the second. The zeros overwrite
    # torch's draw, so every other weight keeps its draw (a paired comparison at one seed). False (the
    # seed's): torch's default for both. Measured 0.003 bits/byte worse in the long-documents preset
    # (bench/RESULTS.md, thirty-first session).
    zero_init_output_projections: bool = False
    # True: each head's attention output is multiplied by 2 * sigmoid(w_h . x), where x is the layer's normed
    # input at that token and w_h a learned vector per head starting at zero, before the output projection
    # (Qiu et al. 2025, "Gated Attention for Large Language Models", their head-wise gate after the
    # attention): a query-dependent gate that can silence a head where it finds nothing worth reading, and
    # a non-linearity between the value and output projections, whose product is otherwise one low-rank
    # linear map. heads * dim parameters a layer (4,096 at the seed's size), starting at a gate of exactly 1,
    # none drawn at random, so the other weights keep their draw and the model starts as the one without.
    # False (the seed's): the attention output as it is.
    attention_gate: bool = False

    def __post_init__(self) -> None:
        for name in _POSITIVE_INT_FIELDS:
            value = getattr(self, name)
            if not _is_int(value):
                raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
            if value < 1:
                raise ValueError(f"{name} must be a positive int, got {value}")
        for name in _BOOL_FIELDS:
            check_bool(name, getattr(self, name))
        for name in _NUMBER_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if not self.fixed_gate_retention < 1:
            raise ValueError(f"fixed_gate_retention must lie strictly between 0 and 1 (the share of the state a block "
                             f"keeps), got {self.fixed_gate_retention!r}")
        if self.gate_type != "fixed" and self.fixed_gate_retention != 0.5:
            raise ValueError(f"fixed_gate_retention applies to gate_type='fixed' only, got gate_type={self.gate_type!r} "
                             f"with fixed_gate_retention={self.fixed_gate_retention!r} (the lstm gate learns its own)")
        if self.fixed_gate_max_half_life is not None:
            given = self.fixed_gate_max_half_life
            if isinstance(given, bool) or not 1 <= given <= MAX_GATE_HALF_LIFE:
                raise ValueError(f"fixed_gate_max_half_life must be None or a number of blocks in "
                                 f"1..{MAX_GATE_HALF_LIFE:g} (the longest starting half-life; 1 starts every "
                                 f"channel at retention 0.5; past {MAX_GATE_HALF_LIFE:g} float32 can no longer hold "
                                 f"the retention apart from 1), got {given!r}")
            if self.gate_type != "fixed" or self.fixed_gate_retention != 0.5:
                raise ValueError(f"fixed_gate_max_half_life={given!r} sets the fixed gate's starting retentions "
                                 f"itself: it needs gate_type='fixed' and the default fixed_gate_retention=0.5, got "
                                 f"gate_type={self.gate_type!r}, fixed_gate_retention={self.fixed_gate_retention!r}")
        if self.logit_softcap is not None and (isinstance(self.logit_softcap, bool)
                                               or not 0 < self.logit_softcap <= MAX_LOGIT_SOFTCAP):
            raise ValueError(f"logit_softcap must be None (no cap) or a number in (0, {MAX_LOGIT_SOFTCAP:g}] (the "
                             f"largest size a logit may take; a larger cap never bites), got {self.logit_softcap!r}")
        for name in MIXING_OPTIONS:
            if getattr(self, name) and self.depth < 2:
                raise ValueError(f"{name}=True needs depth >= 2 (it joins the embeddings, the first layer or the first "
                                 f"half to later layers), got depth={self.depth}")
        if feedforward_width(self.dim, self.ff_mult, self.ff_glu) < 1:
            raise ValueError(f"ff_mult ({self.ff_mult}) leaves the feed-forward of dim {self.dim} with no hidden unit")
        if self.dim_head % 2 != 0:
            raise ValueError(f"dim_head must be even (rotary positions rotate pairs of channels), got {self.dim_head}")
        if self.rotary_dim is not None and not (_is_int(self.rotary_dim) and 2 <= self.rotary_dim <= self.dim_head
                                                and self.rotary_dim % 2 == 0):
            raise ValueError(f"rotary_dim must be None or an even int in 2..dim_head={self.dim_head} (channels of "
                             f"each head that rotary positions rotate), got {self.rotary_dim!r}")
        if self.heads % self.kv_heads != 0:
            raise ValueError(f"heads ({self.heads}) must be divisible by kv_heads ({self.kv_heads})")
        if self.max_seq_len % self.block_width != 0:
            raise ValueError(
                f"max_seq_len ({self.max_seq_len}) must be divisible by block_width ({self.block_width})"
            )
        if self.xl_memory_blocks > 1 and self.knn_layers:
            raise ValueError(f"xl_memory_blocks={self.xl_memory_blocks} cannot serve knn_layers {tuple(self.knn_layers)}: "
                             f"the kNN store takes the block leaving a one-block XL memory; use xl_memory_blocks=1")
        if self.use_compressed_mem:
            if self.compressed_mem_factor < 2 or self.block_width % self.compressed_mem_factor != 0:
                raise ValueError(
                    f"compressed_mem_factor must be >= 2 and divide block_width ({self.block_width}), "
                    f"got {self.compressed_mem_factor}"
                )
            if self.block_width % 2 != 0:
                raise ValueError(f"block_width must be even with use_compressed_mem, got {self.block_width}")

        if self.num_state_vectors is None:
            self.num_state_vectors = self.block_width
        if not _is_int(self.num_state_vectors) or self.num_state_vectors < 1:
            raise ValueError(f"num_state_vectors must be a positive int, got {self.num_state_vectors!r}")

        # the seed's default: one recurrent layer in the middle of the network
        write = (max(self.depth // 2, 1),) if self.recurrent_layers is None else self.recurrent_layers
        write = _layers_tuple("recurrent_layers", write, self.depth)
        if len(set(write)) != len(write):
            raise ValueError(f"recurrent_layers must not repeat a layer, got {write!r}")
        read = write if self.read_recurrent_layers is None else self.read_recurrent_layers
        read = _layers_tuple("read_recurrent_layers", read, self.depth)
        if len(read) != len(write):
            raise ValueError(
                f"read_recurrent_layers needs one read layer per recurrent layer {write!r}, got {read!r}"
            )
        for read_layer, write_layer in zip(read, write):
            if read_layer > write_layer:
                raise ValueError(
                    f"read_recurrent_layers: layer {read_layer} cannot read the state written by layer "
                    f"{write_layer}: a state is read at or below the layer that writes it"
                )
        self.recurrent_layers, self.read_recurrent_layers = write, read

        knn = _layers_tuple("knn_layers", self.knn_layers, self.depth)
        if len(set(knn)) != len(knn):
            raise ValueError(f"knn_layers must not repeat a layer, got {knn!r}")
        self.knn_layers = knn
        if knn and self.knn_memory_size % self.block_width != 0:
            raise ValueError(f"knn_memory_size ({self.knn_memory_size}) must be a multiple of block_width "
                             f"({self.block_width}): the store takes whole blocks")
        if self.knn_top_k > self.knn_memory_size:
            raise ValueError(f"knn_top_k ({self.knn_top_k}) cannot exceed knn_memory_size ({self.knn_memory_size})")
        if self.knn_backend == "faiss" and self.knn_retrieval != "exact":
            # both routings read the store's keys as tensors (summaries per group, or a router over all of them)
            raise ValueError(f'knn_backend="faiss" supports knn_retrieval="exact" only, got '
                             f'knn_retrieval={self.knn_retrieval!r}: routed retrieval reads the store as tensors; '
                             f'use knn_backend="torch" with it')
        if self.knn_retrieval == "query_routed" and self.block_width % KNN_ROUTE_GROUP != 0:
            # the store's slots then come in whole groups of consecutive positions, the same whatever its
            # ring's size: a model run whole or segment by segment routes alike
            raise ValueError(f"knn_retrieval='query_routed' needs a block_width that is a multiple of "
                             f"{KNN_ROUTE_GROUP} (it routes to groups of {KNN_ROUTE_GROUP} consecutive entries), "
                             f"got {self.block_width}")
        if self.knn_retrieval == "query_routed" and self.knn_route_groups * KNN_ROUTE_GROUP < self.knn_top_k:
            raise ValueError(f"knn_route_groups ({self.knn_route_groups}) groups of {KNN_ROUTE_GROUP} entries cannot "
                             f"hold knn_top_k ({self.knn_top_k}) entries: use knn_route_groups >= "
                             f"{-(-self.knn_top_k // KNN_ROUTE_GROUP)}")

    # derived sizes, named once so that every module agrees on them

    @property
    def xl_memory_len(self) -> int:
        """XL memory entries kept: xl_memory_blocks whole blocks."""
        return self.xl_memory_blocks * self.block_width

    @property
    def compressed_mem_len(self) -> int:
        """Compressed memory entries kept (the seed's choice: half a block)."""
        return self.block_width // 2 if self.use_compressed_mem else 0

    def qk_rmsnorm(self, layer: int) -> bool:
        """kNN layers always normalise queries and keys, recurrent layers unless
        ``recurrent_layers_qk_rmsnorm`` is False; others only if asked to."""
        return (self.all_layers_qk_rmsnorm or layer in self.knn_layers
                or (self.recurrent_layers_qk_rmsnorm and layer in self.recurrent_layers))

    def to_dict(self) -> dict:
        """Plain constructor arguments, for checkpoints."""
        d = asdict(self)
        d["recurrent_layers"] = list(d["recurrent_layers"])
        d["read_recurrent_layers"] = list(d["read_recurrent_layers"])
        d["knn_layers"] = list(d["knn_layers"])
        return d


def _numpy_bool(value: object) -> bool:
    return type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")


def _plain_int(value: object) -> object:
    """An integer-like value other than a bool (np.int64(64), a 0-d integer tensor) as an int; else unchanged."""
    if isinstance(value, bool) or _numpy_bool(value):
        return value
    if isinstance(value, numbers.Integral) or (hasattr(value, "__index__") and getattr(value, "ndim", 0) == 0
                                               and not isinstance(value, float)):
        try:
            return operator.index(value)
        except TypeError:
            return value
    return value


def coerce_seed_values(name: str, value: object) -> object:
    """What the seed's untyped constructor accepted, as the plain Python type this config checks:
    numpy/tensor integers as int, 0/1 (or numpy bools) for flags as bool, numpy floats as float,
    sequences of integer-like layer numbers as a tuple of ints. Anything else (1.5 for an int,
    "yes" or 2 for a flag) is returned unchanged, to get the config's clear error."""
    if name in _INT_FIELDS:
        return _plain_int(value)
    if name in _BOOL_FIELDS:
        if _numpy_bool(value):
            return bool(value)
        number = _plain_int(value)
        if not isinstance(value, bool) and isinstance(number, int) and number in (0, 1):
            return bool(number)
        return value
    if name in _NUMBER_FIELDS or name in _OPTIONAL_NUMBER_FIELDS:  # None passes through unchanged
        number = _plain_int(value)
        if isinstance(number, int):
            return number
        if isinstance(value, numbers.Real) and not isinstance(value, (bool, float)):
            return float(value)
        return value
    if name in _LAYER_FIELDS and isinstance(value, (list, tuple, range)):
        return tuple(_plain_int(v) for v in value)
    return value


_checked_init = BlockRecurrentConfig.__init__


@functools.wraps(_checked_init)
def _init(self, *args, **kwargs) -> None:
    names = [f.name for f in fields(BlockRecurrentConfig)]
    args = tuple(coerce_seed_values(name, value) for name, value in zip(names, args))
    kwargs = {name: coerce_seed_values(name, value) for name, value in kwargs.items()}
    _checked_init(self, *args, **kwargs)


BlockRecurrentConfig.__init__ = _init  # integer/bool-like values converted, then type-checked
