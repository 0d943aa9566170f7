"""Evaluation (a quick loss estimate, bpc over a whole split) and samples, all run eagerly."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from block_recurrent_transformer_pytorch import BlockRecurrentTransformer

from .checkpoints import RunLog
from .config import TrainConfig, TrainError
from .data import get_batch
from .distributed import rank_world
from .documents import DocumentStreams, document_count
from .model import autocast
from .tokens import bits_per_byte


# Evaluation and sampling run eagerly even when the training step compiled the model in place (see
# train.py's _run): a compiled module would compile again for no_grad, eval mode and each new shape.
@torch.compiler.set_stance("force_eager")
@torch.no_grad()
def estimate_loss(trainer: nn.Module, data: Tensor, cfg: TrainConfig, device: torch.device) -> float:
    """Mean loss (nats) of the wrapper over cfg.eval_batches random batches, averaged over ranks.

    The batches come from a generator seeded afresh each time, so every estimate sees the same
    text and the validation curve compares like with like.
    """
    rank, world = rank_world()
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


# Buckets of a byte's offset in its document, for bits per byte by position: where memories and
# the recurrent state can help is after the first block (1k) and beyond the attention window.
OFFSET_BUCKETS = ((0, "0-1k"), (1024, "1k-4k"), (4096, "4k-16k"), (16384, "16k-64k"), (65536, "64k+"))


@dataclass
class SplitEvaluation:
    """Bits per byte over every predicted byte of a split, their count, and (with a document
    separator) per offset bucket: {name: (bits per byte, bytes)}."""

    bpc: float
    count: int
    by_offset: Optional[dict[str, tuple[float, int]]] = None


@torch.no_grad()
def _stream_nats(model: BlockRecurrentTransformer, streams: Tensor, amp: torch.autocast,
                 keep_states: bool = True) -> Tensor:
    """Next-token loss (nats, float64) of every prediction of streams (b, L + 1), read in order: (b, L).

    Each row is cut into segments of at most max_seq_len predictions; memories and states are
    carried from one segment to the next (Transformer-XL evaluation); keep_states=False starts every
    segment from the initial states (memories still carried): what the recurrent state adds.
    """
    nats, memories, states = [], None, None
    for start in range(0, streams.shape[1] - 1, model.max_seq_len):
        segment = streams[:, start:start + model.max_seq_len + 1]
        with amp:
            logits, memories, states = model(segment[:, :-1], xl_memories=memories,
                                              states=states if keep_states else None)
        nats.append(F.cross_entropy(logits.float().transpose(1, 2), segment[:, 1:], reduction="none").double())
    return torch.cat(nats, dim=1)


def document_offsets(data: Tensor, separator: int) -> Tensor:
    """For every position p of data, the offset in its document of the byte at p: bytes since the
    last separator before p (a split's first document counts from the split's start)."""
    positions = torch.arange(len(data))
    ends = torch.where(data == separator, positions, -1).cummax(dim=0).values  # last separator at or before p
    last_before = torch.cat((torch.tensor([-1]), ends[:-1]))
    return positions - last_before - 1


@torch.compiler.set_stance("force_eager")  # eagerly, as estimate_loss
@torch.no_grad()
def evaluate_split(model: BlockRecurrentTransformer, data: Tensor, streams: int, amp: Optional[torch.autocast] = None,
                   keep_states: bool = True, separator: Optional[int] = None) -> SplitEvaluation:
    """Bits per character over every predicted byte of data (all but the first), and their count;
    with ``separator``, also by the byte's offset in its document (``OFFSET_BUCKETS``).

    data is cut into `streams` contiguous streams run as one batch (spread over the ranks when
    distributed). The count of predictions rarely divides evenly: the r left over are the split's
    first bytes, evaluated as one more short stream. Each byte is predicted exactly once.
    ``keep_states=False``: the states restart every segment (see ``_stream_nats``).
    """
    rank, world = rank_world()
    device, amp = model.device, amp or nullcontext()
    targets = len(data) - 1
    length, head = divmod(targets, streams)
    if length < 1:
        raise TrainError(f"{len(data):,} bytes are too few for {streams} evaluation streams")
    was_training = model.training
    model.eval()
    positions, nats = [], []  # this rank's predicted positions in data, and their losses
    rows = range(rank, streams, world)
    if len(rows):
        index = head + torch.tensor(rows)[:, None] * length + torch.arange(length + 1)
        positions.append(index[:, 1:].flatten())
        nats.append(_stream_nats(model, data[index].long().to(device), amp, keep_states).flatten())
    if rank == 0 and head:
        positions.append(torch.arange(1, head + 1))
        nats.append(_stream_nats(model, data[None, :head + 1].long().to(device), amp, keep_states).flatten())
    model.train(was_training)
    positions = torch.cat(positions) if positions else torch.zeros(0, dtype=torch.long)
    nats = torch.cat(nats) if nats else torch.zeros(0, device=device, dtype=torch.float64)
    # per bucket (the whole split as the last row): summed nats and bytes, summed over the ranks
    buckets = torch.zeros(2, len(OFFSET_BUCKETS) + 1, device=device, dtype=torch.float64)
    buckets[0, -1], buckets[1, -1] = nats.sum(), len(nats)
    if separator is not None:
        starts = torch.tensor([start for start, _ in OFFSET_BUCKETS[1:]])
        bucket = torch.bucketize(document_offsets(data, separator)[positions], starts, right=True).to(device)
        buckets[0, :-1].index_add_(0, bucket, nats)
        buckets[1, :-1].index_add_(0, bucket, torch.ones_like(nats))
    if world > 1:
        dist.all_reduce(buckets)
    total, counts = buckets.tolist()
    by_offset = None if separator is None else {
        name: (total[i] / counts[i] / math.log(2) if counts[i] else float("nan"), int(counts[i]))
        for i, (_, name) in enumerate(OFFSET_BUCKETS)}
    return SplitEvaluation(bits_per_byte(total[-1] / targets, data), targets, by_offset)


@torch.compiler.set_stance("force_eager")  # eagerly, as estimate_loss
@torch.no_grad()
def evaluate_documents(model: BlockRecurrentTransformer, data: Tensor, separator: int, rows: int,
                       amp: Optional[torch.autocast] = None, keep_states: bool = True) -> SplitEvaluation:
    """Bits per byte over every predicted token of data (all but the first), read document by
    document: each document from its start, after its memories and states were reset, the way
    ``--documents`` trains (``DocumentStreams``); also by the token's offset in its document.

    ``rows`` documents are read side by side (the ranks share them out when distributed).
    ``keep_states=False``: the states restart every segment (memories still carried).
    """
    rank, world = rank_world()
    device, amp, ignore = model.device, amp or nullcontext(), model.config.ignore_index
    streams = DocumentStreams(data, separator, rows, model.max_seq_len, shuffle=False, ignore_index=ignore,
                              documents=range(rank, document_count(data, separator), world))
    was_training = model.training
    model.eval()
    # per bucket (the whole split as the last column): summed nats and tokens, summed over the ranks
    buckets = torch.zeros(2, len(OFFSET_BUCKETS) + 1, device=device, dtype=torch.float64)
    starts = torch.tensor([start for start, _ in OFFSET_BUCKETS[1:]], device=device)
    memories = states = None
    while not streams.exhausted:
        batch = streams.next(1)
        inputs, labels, offsets = (t.to(device) for t in (batch.inputs, batch.labels, batch.offsets))
        with amp:
            logits, memories, states = model(inputs, xl_memories=memories, states=states if keep_states else None,
                                             reset=batch.reset[:, 0].to(device))
        nats = model.loss(logits.float(), labels, reduction="none").double()
        counted = labels != ignore
        bucket = torch.bucketize(offsets, starts, right=True)[counted]
        buckets[0, :-1].index_add_(0, bucket, nats[counted])
        buckets[1, :-1].index_add_(0, bucket, torch.ones_like(nats[counted]))
    model.train(was_training)
    buckets[:, -1] = buckets[:, :-1].sum(dim=1)
    if world > 1:
        dist.all_reduce(buckets)
    (total, counts), targets = buckets.tolist(), len(data) - 1
    if int(counts[-1]) != targets:  # DocumentStreams' promise: every position but the first, once
        raise RuntimeError(f"evaluated {int(counts[-1]):,} predictions of a split of {len(data):,} tokens")
    by_offset = {name: (total[i] / counts[i] / math.log(2) if counts[i] else float("nan"), int(counts[i]))
                 for i, (_, name) in enumerate(OFFSET_BUCKETS)}
    return SplitEvaluation(bits_per_byte(total[-1] / targets, data), targets, by_offset)


def evaluate(model: BlockRecurrentTransformer, data: Tensor, streams: int,
             amp: Optional[torch.autocast] = None) -> tuple[float, int]:
    """Bits per character over every predicted byte of data, and their count (``evaluate_split``)."""
    result = evaluate_split(model, data, streams, amp)
    return result.bpc, result.count


def decode_bytes(ids: list[int]) -> str:
    """Byte ids as text (invalid UTF-8 replaced)."""
    return bytes(ids).decode("utf-8", errors="replace")


@torch.compiler.set_stance("force_eager")  # eagerly, as estimate_loss; generate has its own CUDA graph
@torch.no_grad()
def sample(model: BlockRecurrentTransformer, prime: Tensor, cfg: TrainConfig, seed: int,
           decode: Callable[[list[int]], str] = decode_bytes) -> str:
    """Text the model writes after prime (1-d token ids), with its own seed, decoded by ``decode``
    (bytes by default; a token directory's tokenizer).

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
    return decode(new[0].tolist())


def final_evaluation(model: BlockRecurrentTransformer, val_data: Tensor, test_data: Tensor, cfg: TrainConfig,
                     step: int, log: RunLog, separator: Optional[int] = None) -> None:
    """Bpc over the whole validation and test splits, printed, logged and plotted; with a document
    ``separator`` (--doc-separator, or a token directory's with --documents) also by offset in the
    document; with recurrent layers, also the test split with the states restarted every segment:
    what the recurrent state is worth. With --documents every document is read from its start
    (``evaluate_documents``), else the split as ``eval_streams`` contiguous streams."""
    amp = autocast(cfg, model.device)

    def run(data: Tensor, keep_states: bool = True) -> SplitEvaluation:
        if cfg.documents:
            return evaluate_documents(model, data, separator, cfg.eval_streams, amp, keep_states)
        return evaluate_split(model, data, cfg.eval_streams, amp, keep_states, separator)

    unit = "bytes" if cfg.data_tokens is None else "tokens"
    results = {}
    for split, data in (("val", val_data), ("test", test_data)):
        results[split] = result = run(data)
        log.log(step=step, kind=f"{split}_full", bpc=result.bpc, bytes=result.count)
        if log.enabled:
            print(f"{split}: {result.bpc:.4f} bpc over all {result.count:,} predicted {unit} (step {step})")
        if result.by_offset is not None:
            log.log(step=step, kind=f"{split}_by_offset", unit=unit,
                    **{name: dict(bpc=bpc, bytes=count) for name, (bpc, count) in result.by_offset.items()})
            if log.enabled:
                per = "bits per byte" if unit == "bytes" else "bits per token"
                print(f"{split} by offset in document ({unit}; {per}): " + ", ".join(
                    f"{name} {bpc:.4f} ({count:,})" if count else f"{name} - (0)"  # no document reached it
                    for name, (bpc, count) in result.by_offset.items()))
    if model.config.recurrent_layers:
        reset = run(test_data, keep_states=False)
        gain = reset.bpc - results["test"].bpc
        log.log(step=step, kind="test_states_reset", bpc=reset.bpc, bytes=reset.count, state_gain=gain)
        if log.enabled:
            print(f"test with the states restarted every segment: {reset.bpc:.4f} bpc "
                  f"(the recurrent state is worth {gain:+.4f} bpc)")
    log.plot()
