"""This process' place in a torchrun job, gradients averaged by hand, FSDP sharding, and stop signals
(SIGINT, SIGTERM)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from block_recurrent_transformer_pytorch import BlockRecurrentTransformer

from .config import TrainError


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


def rank_world() -> tuple[int, int]:
    """This process' rank and the number of processes (0 and 1 outside a distributed job)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def average_gradients(model: nn.Module, world_size: int) -> None:
    """All-reduce every gradient to its mean over the ranks (what DDP does), in one flat buffer."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    for g, reduced in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(reduced.view_as(g))


def shard_model(model: BlockRecurrentTransformer) -> None:
    """Shard model's parameters over the job's ranks with FSDP2, in place; gradients and the optimizer
    state built afterwards are sharded with them.

    One unit per layer: each ``Layer`` call (one per layer and block, transformer.py) all-gathers that
    layer's weights just before it runs and frees them after it; the backward gathers them again and
    reduce-scatters their gradients. The root unit holds the rest (embedding, recurrent states,
    compressor, output norm and logits), gathered from a forward to the end of its backward.

    No MixedPrecisionPolicy: the weights stay fp32 and train.py's bf16 autocast casts, as on one GPU,
    so norms, softmax, the loss and the recurrent state carried from block to block (checked against
    the weights' dtype) stay fp32 and gradients are reduced in fp32. bf16 parameters would halve the
    all-gathers' bytes but give other numbers than the one-GPU run.
    """
    for layer in model.layers:
        fully_shard(layer)
        layer.register_forward_pre_hook(_gather_for_recomputation)  # runs after FSDP's own (prepended)
    fully_shard(model)


def _gather_for_recomputation(layer: FSDPModule, args: tuple) -> None:
    """Gather the layer's weights if they are still shards when it is called.

    FSDP's pre-forward hook gathers them, except (torch <= 2.11; pytorch issues 153354 and 187437) in
    an activation-checkpointing recomputation during the backward, where it counts on its
    pre-backward hook having done so: not true here, where a layer runs once per block and the
    backward of a later block's call has freed the weights again before an earlier block is
    recomputed. The recomputation then fails (a DTensor met a Tensor). Later torch gathers them itself.
    """
    if isinstance(next(layer.parameters()), DTensor):  # FSDP puts the shards (DTensors) back when it frees
        layer.unshard()  # freed again by this call's post-backward hook, as FSDP's own gathering would be


def whole_tensor(x: Tensor) -> Tensor:
    """x, or for a shard (a DTensor) the whole tensor, all-gathered: every rank must call it together."""
    return x.full_tensor() if isinstance(x, DTensor) else x


@torch.no_grad()
def copy_full_weights(sharded: nn.Module, whole: nn.Module) -> None:
    """Copy the weights of sharded (FSDP) into whole, an unsharded model of the same architecture.
    Every rank must call it together: each sharded parameter is all-gathered in turn."""
    target = whole.state_dict()
    for name, value in sharded.state_dict().items():
        target[name].copy_(whole_tensor(value))


def gathered(state: Any, keep: bool) -> Any:
    """A state dict (nested dicts, lists and tuples of tensors) with each sharded tensor (DTensor) whole:
    all-gathered, then moved to the CPU where keep (the rank that saves it), else dropped (None).
    Every rank must call it together on the same structure. Other values are returned as they are."""
    if isinstance(state, DTensor):
        whole = whole_tensor(state)  # on every rank: a collective
        return whole.cpu() if keep else None
    if isinstance(state, dict):
        return {k: gathered(v, keep) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(gathered(v, keep) for v in state)
    return state


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a whole optimizer state (``optimizer.state_dict()`` layout, as checkpoints keep it with or
    without --fsdp). For sharded parameters, each per-element value (exp_avg, exp_avg_sq: the
    parameter's shape) is cut to this rank's shard first, one tensor at a time and locally (every
    rank holds the whole state on its CPU): loading the whole state onto the GPU would hold all of it
    there at once, which a model that needs FSDP may not have room for."""
    params = {}  # the state's parameter numbers -> the parameters, group by group
    for group, saved in zip(optimizer.param_groups, state["param_groups"]):
        params.update(zip(saved["params"], group["params"]))
    shards = {}
    for number, values in state["state"].items():
        param = params[number]
        if isinstance(param, DTensor):
            values = {key: distribute_tensor(value, param.device_mesh, param.placements, src_data_rank=None)
                      if isinstance(value, Tensor) and value.ndim > 0 and value.shape == param.shape else value
                      for key, value in values.items()}
        shards[number] = values
    optimizer.load_state_dict({**state, "state": shards})


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
