"""Evaluation (a quick loss estimate, bpc over a whole split) and samples, all run eagerly."""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn

from block_recurrent_transformer_pytorch import BlockRecurrentTransformer

from .checkpoints import RunLog
from .config import TrainConfig, TrainError
from .data import get_batch
from .distributed import rank_world
from .model import autocast


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
    rank, world = rank_world()
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


def final_evaluation(model: BlockRecurrentTransformer, val_data: Tensor, test_data: Tensor, cfg: TrainConfig,
                     step: int, log: RunLog) -> None:
    """Bpc over the whole validation and test splits, printed, logged and plotted."""
    for split, data in (("val", val_data), ("test", test_data)):
        bpc, count = evaluate(model, data, cfg.eval_streams, autocast(cfg, model.device))
        log.log(step=step, kind=f"{split}_full", bpc=bpc, bytes=count)
        if log.enabled:
            print(f"{split}: {bpc:.4f} bpc over all {count:,} predicted bytes (step {step})")
    log.plot()
