"""Train a Block-Recurrent Transformer on enwik8 (or any file of bytes) and report bits per character.

    python train.py                          # enwik8 with the seed's setup, on one GPU (or, slowly, CPU)
    python train.py --no-cuda-graph --no-compile   # a GPU's eager loop (the default there: TrainStep + compile)
    torchrun --nproc_per_node 8 train.py     # the same on 8 GPUs: the global batch grows 8x
    python train.py --resume                 # continue runs/enwik8/ckpt.pt exactly where it stopped
    python train.py --eval-only              # full validation and test bpc of runs/enwik8/ckpt.pt
    python train.py --help                   # every hyperparameter has a flag

enwik8 is read from data/enwik8, data/enwik8.zip or data/enwik8.gz and downloaded from the Hutter
prize page when none of them is there (data/README.md). The standard split is used: the first 90M
bytes train, the next 5M validate, the last 5M test. Results are bits per character (bpc): the
mean next-byte cross-entropy in nats divided by ln 2, over every byte of a split.

The default schedule (linear warmup over 1,000 steps to a peak rate of 1e-4, cosine decay to 1e-5 at
--max-steps 100,000) is for the full enwik8 run: a run of a few hundred steps or fewer barely leaves
the warmup and learns almost nothing. Scale it with the run: for short runs raise --learning-rate
(e.g. 1e-3 for a small model, 6e-4 for the default one) and lower --warmup-steps to a few percent of
--max-steps (e.g. --max-steps 300 --warmup-steps 30).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import signal
import sys
import threading
import time
import urllib.request
import zipfile
import zlib
from contextlib import nullcontext, suppress
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional, Union, get_args, get_origin, get_type_hints

import matplotlib

matplotlib.use("Agg")  # write PNGs without a display (servers, clusters)
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402
from tqdm import tqdm  # noqa: E402

from block_recurrent_transformer_pytorch import BlockRecurrentTransformer, RecurrentTrainerWrapper, TrainStep  # noqa: E402

ENWIK8_URL = "http://mattmahoney.net/dc/enwik8.zip"
ENWIK8_BYTES = 100_000_000
CHECKPOINT = "ckpt.pt"
METRICS = "metrics.jsonl"
PLOT = "bpc.png"


def _opt(default: Any, help: str, choices: Optional[tuple[str, ...]] = None, metavar: Optional[str] = None) -> Any:
    """A config field with its command-line help text (and allowed values or a name for its value)."""
    return field(default=default, metadata={"help": help, "choices": choices, "metavar": metavar})


@dataclass
class TrainConfig:
    """Everything a run depends on.

    The model, batch and dropout defaults are the seed package's enwik8 setup (and its 1e-4 rate);
    the optimisation adds AdamW, warmup then cosine decay, and gradient clipping.
    """

    # data and files
    data: Optional[str] = _opt(None, "train on this file of bytes instead of enwik8, split 90/5/5 by "
                                     "fraction (a .gz or single-member .zip is unpacked)", metavar="PATH")
    data_dir: str = _opt("data", "where enwik8 is looked for and downloaded to", metavar="DIR")
    enwik8_url: str = _opt(ENWIK8_URL, "where enwik8.zip is downloaded from when data-dir has no copy", metavar="URL")
    out_dir: str = _opt("runs/enwik8", "checkpoint, metrics.jsonl and bpc.png go here", metavar="DIR")
    # model (byte-level: 256 tokens)
    num_tokens: int = _opt(256, "vocabulary size (bytes)")
    dim: int = _opt(512, "model width")
    depth: int = _opt(6, "number of layers")
    heads: int = _opt(8, "query heads")
    dim_head: int = _opt(64, "width of a head")
    kv_heads: int = _opt(1, "key/value heads (1: multi-query, as in the seed)")
    ff_mult: float = _opt(4.0, "feed-forward expansion")
    max_seq_len: int = _opt(1024, "tokens per segment (one forward call); memories and states carry across")
    block_width: int = _opt(512, "tokens per block: the unit of attention and of state updates")
    num_state_vectors: int = _opt(512, "recurrent state vectors per recurrent layer")
    recurrent_layers: Optional[tuple[int, ...]] = _opt(None, "layers (numbered from 1) that hold a recurrent state "
                                                             "(default: the middle layer, max(depth // 2, 1))")
    read_recurrent_layers: Optional[tuple[int, ...]] = _opt(None, "layer reading each state (default: its own)")
    gate_type: str = _opt("fixed", "state gate", choices=("fixed", "lstm"))
    all_layers_qk_rmsnorm: bool = _opt(False, "qk-rmsnorm in every layer, not only recurrent ones")
    use_compressed_mem: bool = _opt(False, "also keep compressed memories of older blocks")
    compressed_mem_factor: int = _opt(4, "compression factor of compressed memories")
    use_flash_attn: bool = _opt(True, "attention through torch SDPA (flash kernel on CUDA with bf16)")
    knn_layers: tuple[int, ...] = _opt((), "layers with kNN memory attention over a long-range store")
    knn_memory_size: int = _opt(262144, "entries per row in each kNN layer's store (a multiple of block-width)")
    knn_top_k: int = _opt(32, "entries each query retrieves (routed: each block)")
    knn_retrieval: str = _opt("exact", "kNN store retrieval", choices=("exact", "routed"))
    qk_rmsnorm_scale: float = _opt(8.0, "attention temperature where queries and keys are rms-normalised")
    xpos_scale_base: int = _opt(512, "xpos length scale of the rotary positions")
    rotary_theta: float = _opt(10000.0, "rotary embedding base")
    xl_memories_dropout: float = _opt(0.1, "chance a training segment starts without memories")
    state_dropout: float = _opt(0.1, "chance a training segment starts from the initial states")
    bptt_segments: int = _opt(1, "segments the gradient flows back through before memories and states "
                                 "are detached (truncated backprop through time)")
    activation_checkpointing: bool = _opt(False, "recompute block activations in the backward pass (less memory)")
    # optimisation; one step = batch_size * grad_accum * world_size samples of seq_len tokens
    seq_len: int = _opt(2048, "tokens per training sample, a multiple of max-seq-len (segments per sample)")
    batch_size: int = _opt(4, "samples per micro-batch, per GPU")
    grad_accum: int = _opt(4, "micro-batches accumulated per optimizer step")
    max_steps: int = _opt(100_000, "optimizer steps; also the length of the cosine schedule")
    learning_rate: float = _opt(1e-4, "peak learning rate (the seed's constant rate; see the schedule above)")
    min_lr: float = _opt(1e-5, "learning rate at the end of the cosine decay")
    warmup_steps: int = _opt(1000, "steps of linear warmup (see the schedule above)")
    weight_decay: float = _opt(0.1, "AdamW decoupled weight decay of linear and embedding weights")
    beta1: float = _opt(0.9, "AdamW beta1")
    beta2: float = _opt(0.95, "AdamW beta2")
    grad_clip: float = _opt(0.5, "clip the global gradient norm to this (0: off)")
    # evaluation, logging, checkpoints (an interval of 0 turns the thing off)
    eval_interval: int = _opt(100, "steps between validation estimates")
    eval_batches: int = _opt(8, "random validation batches per estimate (the same ones every time)")
    eval_streams: int = _opt(4, "contiguous streams the final full val/test pass runs in parallel")
    log_interval: int = _opt(10, "steps between train-loss records")
    checkpoint_interval: int = _opt(1000, "steps between checkpoints (one is also written at the end)")
    sample_interval: int = _opt(500, "steps between printed samples")
    prime_length: int = _opt(128, "bytes of validation text that prime a sample")
    sample_length: int = _opt(512, "new bytes generated per sample")
    temperature: float = _opt(1.0, "sampling temperature (0: greedy)")
    filter_thres: float = _opt(0.9, "sample from the top (1 - filter_thres) of the vocabulary")
    # system
    seed: int = _opt(1337, "seed of initialisation, data sampling and dropout (rank r uses seed + r)")
    device: str = _opt("auto", "auto: cuda if available, else cpu", choices=("auto", "cuda", "cpu"))
    amp: bool = _opt(True, "bf16 autocast on CUDA (no effect on CPU)")
    # None (the default): decided by fast_path() from the device and the rest of the config
    compile: Optional[bool] = _opt(None, "torch.compile the model (default: on a CUDA GPU together with "
                                         "--cuda-graph's TrainStep; --no-compile: never)")
    cuda_graph: Optional[bool] = _opt(None, "train through TrainStep: each segment's forward and backward on its "
                                            "own, replayed from a CUDA graph on a GPU (the same computation, "
                                            "eagerly, on a CPU); needs --bptt-segments 1 and no kNN layers "
                                            "(default: on a CUDA GPU wherever it applies; --no-cuda-graph: never)")
    resume: bool = _opt(False, "continue the checkpoint in out-dir (its config, changed only by flags you pass)")
    eval_only: bool = _opt(False, "only evaluate the checkpoint in out-dir on the whole val and test splits")
    stop_at_step: Optional[int] = _opt(None, "stop with a checkpoint after this step, keeping the max-steps "
                                            "schedule (for job time limits; continue with --resume)")
    allow_data_change: bool = _opt(False, "resume (or evaluate) although the data differ from the checkpoint's "
                                          "(its size or CRC-32)")

    def __post_init__(self) -> None:
        positive = ("seq_len", "batch_size", "grad_accum", "max_steps", "eval_batches", "eval_streams",
                    "log_interval", "prime_length", "sample_length")
        for name in positive:
            if getattr(self, name) < 1:
                raise TrainError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.seq_len % self.max_seq_len != 0:
            raise TrainError(f"--seq-len ({self.seq_len}) must be a multiple of --max-seq-len ({self.max_seq_len}): "
                             f"a sample is processed as whole segments")
        if self.cuda_graph and (self.bptt_segments != 1 or self.knn_layers):
            raise TrainError(f"--cuda-graph needs --bptt-segments 1 and no --knn-layers, got "
                             f"--bptt-segments {self.bptt_segments} --knn-layers {list(self.knn_layers)}")
        if self.stop_at_step is not None and not 1 <= self.stop_at_step <= self.max_steps:
            raise TrainError(f"--stop-at-step must lie in 1..max-steps={self.max_steps}, got {self.stop_at_step}")


# flags of one invocation, not of the run: never stored with it, nor taken from its checkpoint
INVOCATION_FLAGS = dict(resume=False, eval_only=False, stop_at_step=None, allow_data_change=False)


def run_config(cfg: TrainConfig) -> dict[str, Any]:
    """cfg as stored in the checkpoint and config.json: the run's flags, those of the invocation at their defaults."""
    return asdict(replace(cfg, **INVOCATION_FLAGS))


class TrainError(Exception):
    """A problem the user can fix (missing data, no checkpoint, bad flag): reported without a traceback."""


# ---- command line ------------------------------------------------------------------------------


def parse_args(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """The flags given on the command line (only those: resume needs to know what was passed)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     argument_default=argparse.SUPPRESS)
    hints = get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        kind, flag = hints[f.name], "--" + f.name.replace("_", "-")
        if get_origin(kind) is Union:  # Optional[X]
            kind = next(a for a in get_args(kind) if a is not type(None))
        text = f.metadata["help"] if f.default is None else f"{f.metadata['help']} (default: {f.default})"
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=text)
        elif get_origin(kind) is tuple:
            parser.add_argument(flag, type=int, nargs="*", metavar="LAYER", help=text)  # none: no such layer
        elif f.metadata["choices"]:
            parser.add_argument(flag, choices=f.metadata["choices"], help=text)
        else:
            parser.add_argument(flag, type=kind, metavar=f.metadata["metavar"] or kind.__name__.upper(), help=text)
    passed = vars(parser.parse_args(argv))
    return {k: tuple(v) if isinstance(v, list) else v for k, v in passed.items()}


def resolve_config(passed: dict[str, Any]) -> TrainConfig:
    """The run's config: the flags over the defaults, or, to resume or evaluate, over the checkpoint's config."""
    cfg = TrainConfig(**passed)
    if not (cfg.resume or cfg.eval_only):
        return cfg
    # the checkpoint's flags win unless passed again: `--resume` alone continues the same run
    saved = load_checkpoint(Path(cfg.out_dir) / CHECKPOINT, mmap=True)["train_config"]
    known = {f.name for f in fields(TrainConfig)}
    saved = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in known}
    saved.update(INVOCATION_FLAGS, out_dir=cfg.out_dir)
    return replace(TrainConfig(**saved), **passed)


# ---- data ----------------------------------------------------------------------------------------


def read_bytes(path: Path, fmt: Optional[str] = None) -> bytes:
    """The bytes of a raw, gzip (.gz) or single-member zip (.zip) file; fmt overrides the suffix."""
    fmt = fmt or {".gz": "gz", ".zip": "zip"}.get(path.suffix, "raw")
    try:
        if fmt == "gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        if fmt == "zip":
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                if len(names) != 1:
                    raise TrainError(f"{path}: expected a zip holding one file, it holds {len(names)}")
                return archive.read(names[0])
        return path.read_bytes()
    except FileNotFoundError:
        raise TrainError(f"{path}: no such file") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise TrainError(f"{path}: cannot read it ({error})") from None


def download_enwik8(url: str, dest: Path, expected_size: int = ENWIK8_BYTES) -> bytes:
    """Download enwik8.zip to dest and return the unpacked bytes.

    The download goes to dest + '.part', renamed to dest only once complete and unpacked to exactly
    expected_size bytes, so an interrupted or wrong download never passes for the real file.
    """
    part = dest.with_name(dest.name + ".part")
    where = (f"Download {url} (the Hutter prize page, http://mattmahoney.net/dc/textdata.html) where you have "
             f"internet and put enwik8.zip (or the unpacked enwik8, or enwik8.gz) in {dest.parent.resolve()}/ "
             f"- see data/README.md")
    try:
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as f:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {url}") as bar:
                    while chunk := response.read(1 << 20):
                        f.write(chunk)
                        bar.update(len(chunk))
                if total is not None and f.tell() != total:
                    raise OSError(f"the connection closed after {f.tell():,} of {total:,} bytes")
                f.flush()
                os.fsync(f.fileno())
        except OSError as error:  # URLError, timeouts and refused connections are OSErrors
            raise TrainError(f"could not download enwik8 from {url}: {error}.\n{where}") from None
        data = read_bytes(part, fmt="zip")
        if len(data) != expected_size:
            raise TrainError(f"{url} unpacked to {len(data):,} bytes; enwik8 is exactly {expected_size:,}.\n{where}")
        os.replace(part, dest)
        return data
    finally:
        part.unlink(missing_ok=True)


def load_enwik8(data_dir: Path, url: str = ENWIK8_URL, expected_size: int = ENWIK8_BYTES) -> bytes:
    """enwik8 from data_dir (raw, .zip or .gz), downloaded there first if it holds none of them."""
    for name in ("enwik8", "enwik8.zip", "enwik8.gz"):
        path = data_dir / name
        if path.exists():
            data = read_bytes(path)
            if len(data) != expected_size:
                raise TrainError(f"{path} holds {len(data):,} bytes, enwik8 is exactly {expected_size:,}: "
                                 f"replace it, or delete it to download enwik8 again")
            return data
    created = [d for d in (data_dir, *data_dir.parents) if not d.exists()]  # deepest first
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        return download_enwik8(url, data_dir / "enwik8.zip", expected_size)
    except BaseException:  # a failed download leaves no empty directories behind (e.g. ./data outside the repo)
        for d in created:
            with suppress(OSError):  # not empty: something else wrote there meanwhile; keep it
                d.rmdir()
        raise


def split_bytes(data: bytes) -> tuple[Tensor, Tensor, Tensor]:
    """Train / validation / test: the first 90%, the next 5%, the last 5% (90M/5M/5M for enwik8)."""
    tokens = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    n_train, n_val = len(tokens) * 90 // 100, len(tokens) * 5 // 100
    return tokens[:n_train], tokens[n_train:n_train + n_val], tokens[n_train + n_val:]


def load_splits(cfg: TrainConfig) -> tuple[str, tuple[Tensor, Tensor, Tensor]]:
    """The corpus' name and its three splits, checked to be long enough for cfg."""
    if cfg.data is not None:
        name, data = cfg.data, read_bytes(Path(cfg.data))
    else:
        name, data = "enwik8", load_enwik8(Path(cfg.data_dir), cfg.enwik8_url)
    if not data:  # torch.frombuffer cannot view an empty buffer: say what is wrong instead
        raise TrainError(f"{name}: no bytes to train on (the file is empty, or unpacks to nothing)")
    splits = split_bytes(data)
    need = cfg.seq_len + 1
    for split, tokens in zip(("train", "validation"), splits):
        if len(tokens) < need:
            raise TrainError(f"{name}: the {split} split has {len(tokens):,} bytes, fewer than one sample "
                             f"(seq-len + 1 = {need:,}); use a larger file or a smaller --seq-len")
    if len(splits[2]) < cfg.eval_streams + 1:
        raise TrainError(f"{name}: the test split has {len(splits[2]):,} bytes, too few for {cfg.eval_streams} streams")
    return name, splits


def data_fingerprint(splits: tuple[Tensor, Tensor, Tensor]) -> dict[str, int]:
    """Size and CRC-32 of the whole corpus (its bytes after unpacking), kept in the checkpoint so that a
    resume notices changed data. Every byte, not a sample: zlib's CRC-32 of enwik8 takes ~0.03 s."""
    crc = 0
    for split in splits:
        crc = zlib.crc32(split.numpy(), crc)
    return {"bytes": sum(len(split) for split in splits), "crc32": crc}


def check_same_data(saved: Optional[dict[str, int]], now: dict[str, int], name: str) -> None:
    """Refuse to continue a run on other data than its checkpoint's (checkpoints from before the
    fingerprint have none: not checked)."""
    if saved is not None and saved != now:
        raise TrainError(f"{name}: the data differ from the checkpoint's ({saved['bytes']:,} bytes, CRC-32 "
                         f"{saved['crc32']:08x}; now {now['bytes']:,} bytes, {now['crc32']:08x}): point --data at "
                         f"the run's file, or pass --allow-data-change to go on with these")


def get_batch(data: Tensor, batch_size: int, seq_len: int, generator: torch.Generator,
              device: torch.device) -> Tensor:
    """batch_size random windows of seq_len + 1 bytes (inputs and next-byte targets) as token ids on device."""
    starts = torch.randint(len(data) - seq_len, (batch_size,), generator=generator)
    x = data[starts[:, None] + torch.arange(seq_len + 1)].long()
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x


# ---- model, optimizer, schedule ------------------------------------------------------------------


def build_model(cfg: TrainConfig) -> BlockRecurrentTransformer:
    """The model cfg describes (fp32 weights, on CPU)."""
    try:
        return BlockRecurrentTransformer(
            num_tokens=cfg.num_tokens, dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, dim_head=cfg.dim_head,
            kv_heads=cfg.kv_heads, ff_mult=cfg.ff_mult, max_seq_len=cfg.max_seq_len, block_width=cfg.block_width,
            num_state_vectors=cfg.num_state_vectors, recurrent_layers=cfg.recurrent_layers,
            read_recurrent_layers=cfg.read_recurrent_layers, gate_type=cfg.gate_type,
            all_layers_qk_rmsnorm=cfg.all_layers_qk_rmsnorm, use_compressed_mem=cfg.use_compressed_mem,
            compressed_mem_factor=cfg.compressed_mem_factor, use_flash_attn=cfg.use_flash_attn,
            qk_rmsnorm_scale=cfg.qk_rmsnorm_scale, xpos_scale_base=cfg.xpos_scale_base, rotary_theta=cfg.rotary_theta,
            knn_layers=cfg.knn_layers, knn_memory_size=cfg.knn_memory_size, knn_top_k=cfg.knn_top_k,
            knn_retrieval=cfg.knn_retrieval, activation_checkpointing=cfg.activation_checkpointing,
        )
    except (TypeError, ValueError) as error:
        raise TrainError(f"invalid model flags: {error}") from None


@dataclass(frozen=True)
class FastPath:
    """How the training step runs: through TrainStep (CUDA graphs on a GPU) or the wrapper eagerly,
    the model compiled or not, and the one line to print about it (None: nothing to say)."""

    cuda_graph: bool
    compile: bool
    note: Optional[str] = None


def fast_path(cfg: TrainConfig, device: torch.device) -> FastPath:
    """Whether this run trains through TrainStep and a compiled model.

    A flag passed (--cuda-graph / --no-cuda-graph, --compile / --no-compile) is obeyed. Left unset,
    both are on together on a CUDA device wherever TrainStep applies: that pair is the measured fast
    path (~14x the eager loop at the default 4 x 2048 on an H200). Compiling the eager loop alone is
    unmeasured, so not a default (--compile asks for it). TrainStep does not apply with
    --bptt-segments > 1 (it backpropagates one segment at a time) or kNN layers (it does not carry
    their store); activation checkpointing has not been run under CUDA graphs and compile, so it
    keeps the eager loop unless both are asked for. On a CPU both default to off, silently: a CUDA
    graph needs a GPU, and a CPU run is a test or a smoke run, not worth a compilation. Under
    torchrun TrainStep applies too: train.py all-reduces its gradients by hand instead of through DDP.
    The note, where there is one, is a single line saying which faster path is not used and why.
    """
    cuda = device.type == "cuda"
    blockers = []
    if cfg.bptt_segments != 1:
        blockers.append(f"--bptt-segments 1 (got {cfg.bptt_segments}: TrainStep backpropagates one segment at a time)")
    if cfg.knn_layers:
        blockers.append(f"no kNN layers (got --knn-layers {' '.join(map(str, cfg.knn_layers))}: "
                        f"TrainStep does not carry their store)")
    if cfg.activation_checkpointing:
        blockers.append("no --activation-checkpointing (untested with CUDA graphs and compile: pass "
                        "--cuda-graph --compile to try)")
    default = cuda and not blockers
    cuda_graph = default if cfg.cuda_graph is None else cfg.cuda_graph
    compile = (default and cuda_graph) if cfg.compile is None else cfg.compile
    note = None
    if cuda and blockers and cfg.cuda_graph is None:
        lost = "TrainStep's CUDA graphs" + (" and torch.compile" if cfg.compile is None else "")
        note = (f"note: training {'compiled, ' if compile else ''}without {lost} (the fast path on a GPU): "
                f"{'it needs' if cfg.compile is None else 'TrainStep needs'} {'; '.join(blockers)}")
    elif cuda and cfg.cuda_graph is False and cfg.compile is None:
        note = ("note: --no-cuda-graph trains eagerly and uncompiled (torch.compile is on by default only "
                "with TrainStep); add --compile to compile the eager loop")
    return FastPath(cuda_graph, compile, note)


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay only on linear and embedding weights, not on norms, gates or learned states."""
    decay = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Linear, nn.Embedding))}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) in decay], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if id(p) not in decay], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2),
                             fused=device.type == "cuda")


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiple of the peak rate at a step: linear warmup, then cosine decay to min_lr at max_steps."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min((step - cfg.warmup_steps) / max(cfg.max_steps - cfg.warmup_steps, 1), 1.0)
    floor = cfg.min_lr / cfg.learning_rate
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def autocast(cfg: TrainConfig, device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA (no loss scaling needed, unlike fp16); full precision elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda")


# ---- evaluation -----------------------------------------------------------------------------------


def _dist_rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# Evaluation and sampling run eagerly even when the training step compiled the model in place (see
# _run): a compiled module would compile again for no_grad, eval mode and each new shape.
@torch.compiler.set_stance("force_eager")
@torch.no_grad()
def estimate_loss(trainer: nn.Module, data: Tensor, cfg: TrainConfig, device: torch.device) -> float:
    """Mean loss (nats) of the wrapper over cfg.eval_batches random batches, averaged over ranks.

    The batches come from a generator seeded afresh each time, so every estimate sees the same
    text and the validation curve compares like with like.
    """
    rank, world = _dist_rank_world()
    generator = torch.Generator().manual_seed(cfg.seed + 1_000_003 * (rank + 1))
    was_training = trainer.training
    trainer.eval()
    total = torch.zeros((), device=device, dtype=torch.float64)
    for _ in range(cfg.eval_batches):
        with autocast(cfg, device):
            total += trainer(get_batch(data, cfg.batch_size, cfg.seq_len, generator, device)).double()
    trainer.train(was_training)
    if world > 1:
        dist.all_reduce(total)
    return total.item() / (cfg.eval_batches * world)


@torch.no_grad()
def _stream_nats(model: BlockRecurrentTransformer, streams: Tensor, amp: torch.autocast) -> Tensor:
    """Summed next-token loss (nats, float64) of every row of streams (b, L + 1), read in order.

    Each row is cut into segments of at most max_seq_len predictions; memories and states are
    carried from one segment to the next (Transformer-XL evaluation), and each segment's mean loss
    is weighted by its number of predictions, the last, shorter segment included.
    """
    total = torch.zeros((), device=streams.device, dtype=torch.float64)
    memories = states = None
    for start in range(0, streams.shape[1] - 1, model.max_seq_len):
        segment = streams[:, start:start + model.max_seq_len + 1]
        with amp:
            loss, memories, states = model(segment, return_loss=True, xl_memories=memories, states=states)
        total += loss.double() * segment.shape[0] * (segment.shape[1] - 1)
    return total


@torch.compiler.set_stance("force_eager")  # eagerly, as estimate_loss
@torch.no_grad()
def evaluate(model: BlockRecurrentTransformer, data: Tensor, streams: int,
             amp: Optional[torch.autocast] = None) -> tuple[float, int]:
    """Bits per character over every predicted byte of data (all but the first), and their count.

    data is cut into `streams` contiguous streams run as one batch (spread over the ranks when
    distributed). The count of predictions rarely divides evenly: the r left over are the split's
    first bytes, evaluated as one more short stream. Each byte is predicted exactly once.
    """
    rank, world = _dist_rank_world()
    device, amp = model.device, amp or nullcontext()
    targets = len(data) - 1
    length, head = divmod(targets, streams)
    if length < 1:
        raise TrainError(f"{len(data):,} bytes are too few for {streams} evaluation streams")
    was_training = model.training
    model.eval()
    total = torch.zeros((), device=device, dtype=torch.float64)
    rows = range(rank, streams, world)
    if len(rows):
        index = head + torch.tensor(rows)[:, None] * length + torch.arange(length + 1)
        total += _stream_nats(model, data[index].long().to(device), amp)
    if rank == 0 and head:
        total += _stream_nats(model, data[None, :head + 1].long().to(device), amp)
    model.train(was_training)
    if world > 1:
        dist.all_reduce(total)
    return total.item() / targets / math.log(2), targets


@torch.compiler.set_stance("force_eager")  # eagerly, as estimate_loss; generate has its own CUDA graph
@torch.no_grad()
def sample(model: BlockRecurrentTransformer, prime: Tensor, cfg: TrainConfig, seed: int) -> str:
    """Text the model writes after prime (a 1-d tensor of bytes), with its own seed.

    Generation runs inside fork_rng so the training run's random streams are not disturbed:
    sampling must not change what a resumed run computes.
    """
    device = model.device
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        with autocast(cfg, device):
            new = model.generate(prime[None].long().to(device), len(prime) + cfg.sample_length,
                                 temperature=cfg.temperature, filter_thres=cfg.filter_thres)
    model.train(was_training)
    return bytes(new[0].tolist()).decode("utf-8", errors="replace")


# ---- checkpoints ---------------------------------------------------------------------------------


def write_atomically(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Replace path by what write puts in a file: a crash at any moment leaves either the old or the new file.

    The bytes go to a temporary file in the same directory (same filesystem, so the rename is
    atomic), are forced to disk, and only then replace path.
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_checkpoint(state: dict, path: Path) -> None:
    """Write a checkpoint atomically (write_atomically)."""
    write_atomically(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path, mmap: bool = False) -> dict:
    """A checkpoint written by save_checkpoint, with a clear error if it is missing or damaged.

    mmap reads tensors only when touched: cheap when only the config is wanted.
    """
    if not path.is_file():
        raise TrainError(f"no checkpoint at {path}: train first, or point --out-dir at the run's directory")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # unpickling raises many types
        raise TrainError(f"{path}: cannot load the checkpoint ({error})") from None


def rng_state(data_generator: torch.Generator) -> dict:
    """Every random stream this process draws from: data sampling, python (memory/state dropout), torch."""
    state = {"data": data_generator.get_state(), "python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict, data_generator: torch.Generator) -> None:
    """Restore what rng_state saved."""
    data_generator.set_state(state["data"])
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def seed_rngs(seed: int, data_generator: torch.Generator) -> None:
    """Seed every random stream of this process."""
    data_generator.manual_seed(seed)
    random.seed(seed)
    torch.manual_seed(seed)


# ---- logging -------------------------------------------------------------------------------------


def read_records(path: Path) -> list[dict]:
    """The records of a metrics.jsonl. A torn last line (the run was killed while appending it) is
    skipped with a warning; a damaged line before it is an error."""
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise TrainError(f"{path}: line {number} is not a JSON record; repair or delete the file") from None
            print(f"warning: {path}: skipped its torn last line {line[:60]!r} (the run was killed while writing it)",
                  file=sys.stderr)
    return records


class RunLog:
    """metrics.jsonl (one JSON record per line, appended as it happens) and bpc.png, on rank 0 only."""

    def __init__(self, out_dir: Path, enabled: bool, until_step: Optional[int]) -> None:
        """Start a fresh log, or keep the records up to until_step (those a resumed run will not redo)."""
        self.enabled, self.path, self.plot_path = enabled, out_dir / METRICS, out_dir / PLOT
        self.records: list[dict] = []
        if not enabled:
            return
        if until_step is not None and self.path.exists():
            self.records = [r for r in read_records(self.path) if r["step"] <= until_step]
        self._rewrite()

    def _rewrite(self) -> None:
        """Write every record anew, atomically: a kill meanwhile must not lose the records of earlier runs."""
        write_atomically(self.path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in self.records).encode()))

    def log(self, **record: Any) -> None:
        """Append one record; one of a step and kind already logged (a finished run evaluated again) replaces it."""
        if not self.enabled:
            return
        if self.records and record["step"] <= self.records[-1]["step"]:
            kept = [r for r in self.records if (r["step"], r["kind"]) != (record["step"], record["kind"])]
            if len(kept) < len(self.records):
                self.records = kept + [record]
                self._rewrite()
                return
        self.records.append(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def plot(self) -> None:
        """Redraw train and validation bpc against steps, with the full-split results if there are any."""
        if not self.enabled:
            return
        fig, ax = plt.subplots(figsize=(8, 5))
        curves = {"train": ("-", 0, "train"), "val": ("o-", 3, "validation (random batches)"),
                  "val_full": ("s", 8, "validation (whole split)"), "test_full": ("*", 10, "test (whole split)")}
        for kind, (style, size, label) in curves.items():
            points = [(r["step"], r["bpc"]) for r in self.records if r["kind"] == kind]
            if points:
                ax.plot(*zip(*points), style, markersize=size, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel("bits per character")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(self.plot_path, dpi=100)
        plt.close(fig)


# ---- training ------------------------------------------------------------------------------------


@dataclass
class DistEnv:
    """This process' place in the (possibly single-process) job."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> DistEnv:
    """Join the torchrun job described by the environment (RANK, WORLD_SIZE, LOCAL_RANK), if any."""
    rank, world, local = (int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise TrainError("--device cuda, but torch sees no CUDA GPU")
    if use_cuda:
        torch.cuda.set_device(local)
    device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", device_id=device if use_cuda else None)
    return DistEnv(rank, local, world, device)


class Interrupted(KeyboardInterrupt):
    """A stop signal ended the run; the message (empty on ranks other than 0) says how. Exit status 128 + signum."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM (kill, a job scheduler's time limit) while train() runs.

    In the training loop (armed) the first signal only sets `received`: the loop finishes its step,
    writes a checkpoint and stops, so a run stopped before its first periodic checkpoint loses
    nothing. A second signal, or one outside the loop (setup, the final evaluation), raises
    Interrupted at once. Handlers can only be set in the main thread; elsewhere the defaults stay.
    """

    def __init__(self, announce: bool) -> None:
        self.announce, self.armed = announce, False
        self.received: Optional[int] = None
        self._previous: dict[int, Any] = {}
        self._group: Optional[Any] = None
        self._pending: Optional[tuple[Tensor, Any]] = None
        self.stopped_together = False  # set when the ranks agreed to stop on a signal

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if not self.armed or self.received is not None:
            raise Interrupted(signum, f"{name}: exited at once (the last checkpoint written, if any, is kept)"
                              if self.announce else "")
        self.received = signum
        if self.announce:
            print(f"\n{name}: stopping after this step, with a checkpoint (Ctrl-C again: exit at once)",
                  file=sys.stderr, flush=True)

    def agreed(self, distributed: bool) -> Optional[int]:
        """The signal to stop on after this step, if any; the same on every rank.

        Distributed, the ranks' signals are all-reduced (the largest number wins) on the CPU, through
        gloo, and read one step later: exchanging them never waits for a GPU nor holds up a step, and
        all ranks stop after the same step, the one after the signal's.
        """
        if not distributed:
            return self.received
        if self._group is None:  # every rank gets here at its first step: a collective call, as needed
            self._group = dist.new_group(backend="gloo")
        flag = torch.tensor(self.received or 0)
        work = dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group, async_op=True)
        pending, self._pending = self._pending, (flag, work)
        if pending is None:
            return None
        pending[1].wait()
        return int(pending[0].item()) or None

    def close(self) -> None:
        """Distributed, once every rank has left the training loop together (finished, or stopped by
        an agreed signal): finish the exchange in flight, wait for every rank and drop the group.
        Destroying process groups while a rank still has gloo work in flight deadlocked at exit (the
        group's destructor joins a worker thread that needs the GIL the destructor holds)."""
        if self._group is None:
            return
        if self._pending is not None:
            self._pending[1].wait()
        dist.barrier(group=self._group)
        dist.destroy_process_group(self._group)
        self._group = self._pending = None


def train(cfg: TrainConfig) -> BlockRecurrentTransformer:
    """Train (or with cfg.eval_only, evaluate) as cfg says; returns the model. See the module docstring."""
    joined_before = dist.is_available() and dist.is_initialized()
    env = setup_distributed(cfg.device)
    stop = StopSignals(announce=env.is_main)
    try:
        with stop:
            model = _run(cfg, env, stop)
        stop.close()
        return model
    except Interrupted:
        if stop.stopped_together:  # every rank raised it after the same step: they can still meet
            stop.close()
        raise
    finally:
        if env.world_size > 1 and not joined_before:
            dist.destroy_process_group()


def _run(cfg: TrainConfig, env: DistEnv, stop: StopSignals) -> BlockRecurrentTransformer:
    device, is_main = env.device, env.is_main
    out_dir, distributed = Path(cfg.out_dir), env.world_size > 1
    ckpt_path = out_dir / CHECKPOINT
    ckpt = load_checkpoint(ckpt_path) if cfg.resume or cfg.eval_only else None
    if ckpt is not None and not cfg.eval_only:
        check_steps_left(ckpt["step"], cfg)
    if ckpt is None and ckpt_path.exists():
        raise TrainError(f"{ckpt_path} exists: pass --resume to continue that run, or choose another --out-dir")
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 for the matmuls autocast leaves in fp32

    # one process per node fetches enwik8 while the others wait, then all read it
    if distributed and env.local_rank != 0:
        dist.barrier()
    name, splits = load_splits(cfg)
    if distributed and env.local_rank == 0:
        dist.barrier()
    train_data, val_data, test_data = splits
    fingerprint = data_fingerprint(splits)
    if ckpt is not None and not cfg.allow_data_change:
        check_same_data(ckpt.get("data"), fingerprint, name)

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = build_model(cfg).to(device)
    if ckpt is not None:
        if ckpt["model_config"] != model.config.to_dict():
            changed = sorted(k for k, v in model.config.to_dict().items() if ckpt["model_config"].get(k) != v)
            raise TrainError(f"the model flags {changed} differ from the checkpoint's model; they cannot change")
        model.load_state_dict(ckpt["model"])
    trainer = RecurrentTrainerWrapper(model, cfg.xl_memories_dropout, cfg.state_dropout, bptt_segments=cfg.bptt_segments)
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(out_dir, is_main, until_step=None if ckpt is None else ckpt["step"])
    fast = fast_path(cfg, device)
    if is_main:
        n_params = sum(p.numel() for p in model.parameters())
        tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum * env.world_size
        print(f"model: {n_params / 1e6:.2f}M parameters, {cfg.depth} layers x {cfg.dim}, "
              f"recurrent layers {model.config.recurrent_layers} with {cfg.num_state_vectors} state vectors")
        print(f"data: {name}: train {len(train_data):,} / val {len(val_data):,} / test {len(test_data):,} bytes")
        print(f"batch: {cfg.batch_size} x {cfg.seq_len} tokens x {cfg.grad_accum} accumulation x "
              f"{env.world_size} process(es) = {tokens_per_step:,} tokens per step")
        graphs = " (CUDA graphs)" if device.type == "cuda" else " (eager)"
        print(f"device: {device}{', bf16 autocast' if cfg.amp and device.type == 'cuda' else ''}"
              f"{', TrainStep' + graphs if fast.cuda_graph else ''}{', compiled' if fast.compile else ''}; "
              f"output: {out_dir}")
        if fast.note and not cfg.eval_only:
            print(fast.note)

    if cfg.eval_only:
        final_evaluation(model, val_data, test_data, cfg, ckpt["step"], log)
        return model

    # before compiling: a dry pass over the first sample finds the parameters a step may leave without a gradient
    first = train_data[None, :cfg.seq_len + 1].long().to(device)
    if is_main:
        warn_untrained(params_without_gradient(model, cfg, first, worst_case=False), cfg)
    may_lack_gradients = distributed and not fast.cuda_graph and bool(
        params_without_gradient(model, cfg, first, worst_case=True))

    optimizer = build_optimizer(model, cfg, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    data_generator = torch.Generator()
    step = 0
    # the train-loss record being accumulated: summed loss (nats), steps and seconds since the last one
    window = {"loss": 0.0, "steps": 0, "seconds": 0.0}
    if ckpt is None:
        seed_rngs(cfg.seed + env.rank, data_generator)  # different batches and dropout on every rank
    else:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        step = ckpt["step"]
        if ckpt["world_size"] == env.world_size:
            set_rng_state(ckpt["rng"][env.rank], data_generator)
            window = ckpt.get("window", [window] * env.world_size)[env.rank]  # older checkpoints kept none
        else:  # a different number of processes cannot replay the same batches; continue on fresh seeds
            seed_rngs(cfg.seed + env.rank + 7919 * step, data_generator)
            if is_main:
                print(f"note: checkpoint from {ckpt['world_size']} processes, resumed on {env.world_size}: "
                      f"the data order differs from an uninterrupted run")
        if is_main:
            done = " = --max-steps: nothing left to train, evaluating it again" if step == cfg.max_steps else ""
            print(f"resumed from {ckpt_path} at step {step}{done}")
    del ckpt
    if is_main:
        config = {"train": run_config(cfg), "model": model.config.to_dict()}
        write_atomically(out_dir / "config.json", lambda f: f.write((json.dumps(config, indent=2) + "\n").encode()))

    if fast.compile:
        # In place: the state_dict keeps its names. Only the training step's calls compile: one graph
        # for a sample's first segment (no memories) and one for the others (dynamic=False: no
        # symbolic-shape recompilation). Evaluation and sampling run the same module eagerly
        # (estimate_loss, evaluate and sample force it), as no_grad, eval mode and other shapes would
        # each compile it again: ~1 min each at the first evaluation, sample and final pass, for
        # passes that take seconds eagerly (sampling uses the cached decoder's own CUDA graph).
        model.compile(dynamic=False)
    # DDP wraps the module the loss goes through, so backward all-reduces the gradients. A parameter a
    # step may leave without a gradient (compressed memory in a step whose segments start without
    # memories, ...) would make it wait for that gradient forever: find_unused_parameters then.
    # TrainStep's graphs run the model itself, so with it the gradients are all-reduced by hand.
    ddp = DistributedDataParallel(trainer, device_ids=[env.local_rank] if device.type == "cuda" else None,
                                  find_unused_parameters=may_lack_gradients) if distributed and not fast.cuda_graph else None
    forward = ddp if ddp is not None else trainer
    amp_dtype = torch.bfloat16 if cfg.amp and device.type == "cuda" else None
    train_step = TrainStep(trainer, cuda_graph=device.type == "cuda", amp_dtype=amp_dtype) if fast.cuda_graph else None
    # The first step compiles and captures graphs: say so, so that a silent minute is not taken for a hang.
    warming = fast.compile or (fast.cuda_graph and device.type == "cuda")
    if warming and is_main:
        print("compiling the training step (about a minute, once)..." if fast.compile else
              "capturing the training step's CUDA graphs (a few seconds, once)...", flush=True)

    def checkpoint(window: dict[str, Any]) -> None:
        """Save the run; window: this rank's unfinished train-loss record, so a resume logs what this run would."""
        states = [None] * env.world_size
        if distributed:
            dist.all_gather_object(states, (rng_state(data_generator), window))
        else:
            states[0] = (rng_state(data_generator), window)
        if is_main:
            save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "step": step, "rng": [r for r, _ in states],
                             "window": [w for _, w in states], "world_size": env.world_size, "model_config": model.config.to_dict(),
                             "train_config": run_config(cfg), "data": fingerprint}, ckpt_path)

    tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum * env.world_size
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not is_main, desc="train", dynamic_ncols=True)
    running_loss = torch.tensor(window["loss"], device=device)
    running_steps, clock = window["steps"], time.perf_counter() - window["seconds"]
    started = time.perf_counter()
    trainer.train()
    stop.armed = True
    while step < cfg.max_steps:
        for micro in range(cfg.grad_accum):
            if train_step is not None:
                # a pinned CPU batch: TrainStep checks it there and copies it without a host sync
                x = get_batch(train_data, cfg.batch_size, cfg.seq_len, data_generator, torch.device("cpu"))
                running_loss += train_step(x.pin_memory() if device.type == "cuda" else x,
                                           loss_scale=1 / cfg.grad_accum) / cfg.grad_accum
                continue
            x = get_batch(train_data, cfg.batch_size, cfg.seq_len, data_generator, device)
            # gradients are summed locally and all-reduced once, in the last micro-step's backward
            sync = ddp is None or micro == cfg.grad_accum - 1
            with nullcontext() if sync else ddp.no_sync():
                with autocast(cfg, device):
                    loss = forward(x) / cfg.grad_accum
                loss.backward()
            running_loss += loss.detach()
        if train_step is not None and distributed:
            average_gradients(model, env.world_size)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        running_steps += 1
        bar.update()
        if warming:  # the step that compiled: how long it took (it counts in the first tokens/s window)
            warming = False
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - started
            if is_main:
                bar.write(f"first step done in {seconds:.1f} s, compilation included; the next steps reuse it")
            log.log(step=step, kind="first_step", seconds=seconds, wall_time=time.time())

        if step % cfg.log_interval == 0 or step == cfg.max_steps:
            if distributed:
                dist.all_reduce(running_loss)
                running_loss /= env.world_size
            loss_nats = running_loss.item() / running_steps  # .item() waits for the GPU: time is exact here
            speed = tokens_per_step * running_steps / (time.perf_counter() - clock)
            bpc = loss_nats / math.log(2)
            bar.set_postfix(loss=f"{loss_nats:.4f}", bpc=f"{bpc:.4f}", tok_s=f"{speed:,.0f}", refresh=False)
            log.log(step=step, kind="train", loss=loss_nats, bpc=bpc, lr=scheduler.get_last_lr()[0],
                    grad_norm=grad_norm.item(), tokens_per_s=speed, tokens=step * tokens_per_step)
            running_loss.zero_()
            running_steps, clock = 0, time.perf_counter()

        paused = time.perf_counter()
        if cfg.eval_interval and step % cfg.eval_interval == 0:
            val_loss = estimate_loss(trainer, val_data, cfg, device)
            if is_main:
                bar.write(f"step {step}: val loss {val_loss:.4f} nats, {val_loss / math.log(2):.4f} bpc")
            log.log(step=step, kind="val", loss=val_loss, bpc=val_loss / math.log(2))
            log.plot()
        if cfg.sample_interval and step % cfg.sample_interval == 0 and is_main:
            start = random.Random(cfg.seed + step).randrange(max(len(val_data) - cfg.prime_length, 0) + 1)
            prime = val_data[start:start + cfg.prime_length]
            text = sample(model, prime, cfg, seed=cfg.seed + step)
            prime_text = bytes(prime.tolist()).decode("utf-8", errors="replace")
            bar.write(f"--- sample at step {step} ---\n{prime_text}\n--- continued by the model ---\n{text}\n---")
        signalled = stop.agreed(distributed)
        stopping = step == cfg.stop_at_step or signalled is not None
        if step == cfg.max_steps or stopping or (cfg.checkpoint_interval and step % cfg.checkpoint_interval == 0):
            checkpoint({"loss": running_loss.item(), "steps": running_steps, "seconds": paused - clock})
        clock += time.perf_counter() - paused  # evaluation, samples and checkpoints do not count in tokens/s
        if stopping:
            bar.close()
            by = "" if signalled is None else f" by {signal.Signals(signalled).name}"
            message = f"stopped{by} at step {step}; continue with: python train.py --resume --out-dir {out_dir}"
            if signalled is not None:
                stop.stopped_together = True
                raise Interrupted(signalled, message if is_main else "")
            if is_main:
                print(message)
            return model
    stop.armed = False  # a signal during the final evaluation exits at once: the checkpoint is written
    bar.close()
    final_evaluation(model, val_data, test_data, cfg, step, log)
    return model


def params_without_gradient(model: BlockRecurrentTransformer, cfg: TrainConfig, sample: Tensor,
                            worst_case: bool) -> list[str]:
    """Names of the trainable parameters that get no gradient from the training loss of sample (1, seq_len + 1).

    worst_case: every memory and state dropout cfg allows happens (each segment starts without memories
    and from the initial states, as the first one does). Dropping only cuts paths to earlier segments,
    so what gets a gradient then gets one in every step; without it, what never gets one at all.
    The weights, the gradients and every random stream are left as they were.
    """
    def worst(p: float) -> float:
        return float(worst_case and p > 0)

    trainer = RecurrentTrainerWrapper(model, worst(cfg.xl_memories_dropout), worst(cfg.state_dropout),
                                      bptt_segments=cfg.bptt_segments)
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    python_rng = random.getstate()  # a dropout draw is certain here, but still consumes a number
    try:
        grads = torch.autograd.grad(trainer(sample), [p for _, p in named], allow_unused=True)
    finally:
        random.setstate(python_rng)
    return [name for (name, _), grad in zip(named, grads) if grad is None]


def warn_untrained(names: list[str], cfg: TrainConfig) -> None:
    """Say which parameters never train, and why when it is the usual cause (a state cut from its readers)."""
    if not names:
        return
    listed = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    why = ""
    if cfg.max_seq_len == cfg.block_width:
        why = (f": with one block per segment (--max-seq-len = --block-width = {cfg.block_width}) the state a block "
               f"writes is read only by the next segment, where the gradient is cut (--bptt-segments "
               f"{cfg.bptt_segments}, {cfg.seq_len // cfg.max_seq_len} segment(s) per sample). Use --max-seq-len "
               f"{2 * cfg.block_width} or more, or --bptt-segments 2 or more with a --seq-len of as many segments")
    print(f"warning: {listed} never get a gradient in this configuration, so they never train{why}",
          file=sys.stderr)


def check_steps_left(step: int, cfg: TrainConfig) -> None:
    """A resumed run must end at or after its checkpoint's step: a clear error, not a run that trains nothing."""
    if cfg.max_steps < step:
        raise TrainError(f"--max-steps {cfg.max_steps} is below the checkpoint's step {step}: pass --max-steps {step} "
                         f"or more to resume (--eval-only evaluates the checkpoint)")
    if cfg.stop_at_step is not None and cfg.stop_at_step <= step:
        raise TrainError(f"--stop-at-step {cfg.stop_at_step} is not after the checkpoint's step {step}")


def average_gradients(model: nn.Module, world_size: int) -> None:
    """All-reduce every gradient to its mean over the ranks (what DDP does), in one flat buffer."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    for g, reduced in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(reduced.view_as(g))


def final_evaluation(model: BlockRecurrentTransformer, val_data: Tensor, test_data: Tensor, cfg: TrainConfig,
                     step: int, log: RunLog) -> None:
    """Bpc over the whole validation and test splits, printed, logged and plotted."""
    for split, data in (("val", val_data), ("test", test_data)):
        bpc, count = evaluate(model, data, cfg.eval_streams, autocast(cfg, model.device))
        log.log(step=step, kind=f"{split}_full", bpc=bpc, bytes=count)
        if log.enabled:
            print(f"{split}: {bpc:.4f} bpc over all {count:,} predicted bytes (step {step})")
    log.plot()


def main(argv: Optional[list[str]] = None) -> int:
    """Command-line entry: 0 on success, 1 with a message on stderr for a problem the user can fix,
    128 + the signal's number when SIGINT or SIGTERM stopped the run (one line on stderr)."""
    try:
        train(resolve_config(parse_args(argv)))
    except TrainError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Interrupted as stopped:
        if str(stopped):
            print(stopped, file=sys.stderr)
        return 128 + stopped.signum
    except KeyboardInterrupt:  # Ctrl-C before train() set its handlers
        print("interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    return 0


if __name__ == "__main__":
    sys.exit(main())
