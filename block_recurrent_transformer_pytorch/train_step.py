"""TrainStep: the loss and gradients of ``RecurrentTrainerWrapper``, segment by segment, each
segment's forward and backward replayed from a CUDA graph.

Eager training at small scale is bound by the host: the block loop launches ~4,000 small kernels
per step, and Python issues them slower than the GPU runs them (at the seed config, 4 x 2048
tokens: 101 ms per step against 20 ms of kernel time on an H200). A CUDA graph launches all of a
segment's kernels at once.

With ``bptt_segments=1`` memories and states are detached between segments, so the gradient of
the mean loss is the sum of each segment's own gradient: every segment can run its backward
right after its forward (which also keeps only one segment's activations alive). A segment is
then a fixed function of (tokens, memories, states, fresh-state flag, loss scale) with fixed
shapes, captured once per shape of its inputs — the first segment (no memories) and the segments
after it — and replayed. Memory/state dropout is decided on the host as the wrapper does (same
draws from Python's ``random``): a dropped memory selects the no-memory graph; a state reset is a
device-side flag (``torch.where`` between the initial and the carried states), so it needs no
graph of its own.

Documents read row by row (``labels`` and ``reset``, see ``RecurrentTrainerWrapper``) add one
graph: while a row's memories still hold entries from before its document started, the segment
runs with those entries masked (``ResetSchedule`` follows them on the host, so no replay waits
for the device); otherwise the unmasked graph (flash attention) runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Optional, Union

import torch
from torch import Tensor

from .config import BlockRecurrentConfig, check_bool
from .memory import Memories, blocks_to_refill, check_memories
from .state import check_states
from .wrapper import RecurrentTrainerWrapper

WARMUP_RUNS = 2  # eager runs on a side stream before a capture (cuBLAS handles, compiled kernels)


class TrainStep:
    """``loss = step(x)`` computes ``RecurrentTrainerWrapper``'s mean loss over x (b, k * max_seq_len + 1)
    and accumulates ``loss_scale *`` its gradient into every parameter's ``.grad``, as
    ``(wrapper(x) * loss_scale).backward()`` does; the optimiser step stays the caller's.

    cuda_graph: replay each segment from a CUDA graph (CUDA only); False runs the same function
        eagerly (the reference the graphs are tested against). Parameters keep persistent gradient
        buffers that the graphs accumulate into; ``optimizer.zero_grad()`` (either way) is fine.
    amp_dtype: autocast dtype for the forward on CUDA (None: no autocast; a CPU step runs in
        full precision either way).
    The wrapper must use ``bptt_segments=1`` and the model no kNN layers (their store is not
    carried here; train through the wrapper directly).
    """

    def __init__(self, wrapper: RecurrentTrainerWrapper, *, cuda_graph: bool = True,
                 amp_dtype: Optional[torch.dtype] = torch.bfloat16) -> None:
        if not isinstance(wrapper, RecurrentTrainerWrapper):
            raise TypeError(f"wrapper must be a RecurrentTrainerWrapper, got {type(wrapper).__name__}")
        model = wrapper.transformer
        if wrapper.bptt_segments != 1:
            raise ValueError(f"TrainStep needs bptt_segments=1 (each segment's backward runs on its own), "
                             f"got bptt_segments={wrapper.bptt_segments}; call the wrapper directly")
        if model.config.knn_layers:
            raise ValueError(f"TrainStep does not carry the kNN store (knn_layers={model.config.knn_layers}); "
                             f"call the wrapper directly")
        if cuda_graph and model.device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs the model on a CUDA device, it is on {model.device}")
        self.wrapper, self.model = wrapper, model
        self.cuda_graph, self.amp_dtype = cuda_graph, amp_dtype
        self._forget_model()

    def _forget_model(self) -> None:
        """Drop everything tied to the model's current tensors: gradient buffers, graphs, constants.
        A parameter that no longer learns loses its gradient (no stale update by the optimiser)."""
        for p in self.model.parameters():
            if not p.requires_grad:
                p.grad = None
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.grads: list[Tensor] = []  # the persistent gradient buffers the graphs accumulate into
        self.graphs: dict[tuple, CapturedSegment] = {}
        self.pool = torch.cuda.graph_pool_handle() if self.cuda_graph else None
        self.constants: dict[bool, Tensor] = {}
        self.scale = torch.zeros((), device=self.model.device)  # loss_scale / segments, refilled each call
        # the blocks_since_reset last returned (on the device) and its copy on the host, so that passing
        # those memories back needs no host sync
        self.returned_since: tuple[Optional[Tensor], Optional[Tensor]] = (None, None)
        self.tensors = self._model_tensors()

    def _model_tensors(self) -> tuple:
        """Where every parameter and buffer lives, and which parameters learn: a graph reads these
        addresses, so a change (``.to()``, ``.bfloat16()``, ``requires_grad_``) needs new graphs."""
        return (tuple((p.data_ptr(), p.dtype, p.requires_grad) for p in self.model.parameters()),
                tuple(b.data_ptr() for b in self.model.buffers()))

    def __call__(self, x: Tensor, loss_scale: Union[float, Tensor] = 1.0, *, xl_memories: Optional[Memories] = None,
                 states: Optional[list[Tensor]] = None, labels: Optional[Tensor] = None, reset: Optional[Tensor] = None,
                 return_memories_and_states: bool = False) -> Union[Tensor, tuple[Tensor, Memories, list[Tensor]]]:
        """Accumulate ``loss_scale`` x the gradient of the mean loss over x; returns the mean loss
        (a detached 0-d tensor on the model's device: reading it is the caller's only host sync).
        ``loss_scale``: a finite number >= 0, or a one-element float tensor (e.g. a GradScaler's).

        x may be on the CPU (best: pinned): its token ids are then checked there and it is copied
        without a host sync. On the GPU, the check waits for the work queued before it.

        As the wrapper's, the first segment starts from ``xl_memories`` and ``states`` (what a
        previous call returned, to read a long sequence across calls; None: afresh), and with
        ``return_memories_and_states=True`` the final ones come back too: copies, detached, since a
        replay overwrites the graph's outputs. ``labels`` and ``reset`` are the wrapper's (documents
        read row by row: each row's memories and states cleared where its next document starts);
        ``reset`` is read on the host (pass it on the CPU: on a GPU, reading it waits for the device).
        """
        check_bool("return_memories_and_states", return_memories_and_states)
        segments = self.wrapper.check_batch(x, labels, reset)
        loss_scale = checked_loss_scale(loss_scale)
        if self._model_tensors() != self.tensors:  # the model moved, was cast or (un)froze parameters
            self._forget_model()
        device, config = self.model.device, self.model.config
        x = self._tokens_on_device(x)
        if labels is not None:  # checked by check_batch (on the CPU, where train.py keeps them)
            labels = labels.to(device, non_blocking=True)
        self._attach_grads()
        seq, b = self.wrapper.seq_len, x.shape[0]
        extra = 1 if labels is None else 0  # without labels, each segment's last target is the next one's first input
        # one buffer filled in place, not a tensor per value (nor per tensor loss_scale, by identity)
        if labels is None:
            scale, labelled = self.scale.fill_(loss_scale / segments), None
        else:  # every labelled position weighs the same, whatever segment it is in
            labelled = (labels != config.ignore_index).sum().clamp(min=1)
            scale = self.scale.copy_(loss_scale / labelled)
        xl, compressed, layer_inputs, since = self._carried_memories(xl_memories, b)
        fresh_start = states is None
        states = self._carried_states(states, b)
        resets = None
        if reset is not None or since is not None:  # some row starts a document, or still masks an old one
            reset = torch.zeros(b, segments, dtype=torch.bool) if reset is None else reset.cpu()
            resets = ResetSchedule(reset, since, config, device)
        total = torch.zeros((), device=device)
        for i in range(segments):
            drop_memories, drop_states = self.wrapper.draw_dropout()
            if drop_memories:
                xl = compressed = layer_inputs = None
            first = i == 0 and fresh_start
            if resets is None:
                fresh, mask_since = self._constant(first or drop_states), None
            else:
                fresh, mask_since = resets.segment(i, everyone=first or drop_states, has_memories=xl is not None)
            inputs = (x[:, i * seq:(i + 1) * seq + extra], None if labels is None else labels[:, i * seq:(i + 1) * seq],
                      xl, compressed, layer_inputs, mask_since, fresh, scale, *states)
            loss, xl, compressed, layer_inputs, *states = self._run(inputs)
            total = total + loss
        mean = total / segments if labelled is None else total / labelled
        if not return_memories_and_states:
            return mean
        # a dropped last memory: the segment still pushed its block, which the outputs hold
        memories = Memories(xl=xl.clone(), compressed=None if compressed is None else compressed.clone(),
                            xl_inputs=None if layer_inputs is None else layer_inputs.clone())
        if resets is not None:
            memories = resets.carried(memories)
            self.returned_since = (memories.blocks_since_reset, resets.since)
        return mean, memories, [s.clone() for s in states]

    def warm_up(self, batch_size: int, *, documents: bool = False) -> int:
        """Run once, now, every kind of segment that training calls of ``batch_size`` rows will run, so
        that none is compiled (a compiled model) or captured (``cuda_graph``) in the middle of training.
        ``documents``: calls with ``labels`` and ``reset``, documents read row by row (train.py
        --documents); else calls on tokens alone. Returns how many CUDA graphs it captured.

        The kinds are the segment without memories, then the segment with the memories of each later
        segment: their shapes change until the compressed memory has filled (a few segments). When
        documents are read, each kind with memories also runs with old entries masked. Left alone,
        that one is first needed at the first step where a row starts a document while its memories
        still hold the last one, in the middle of a timed run. A compiled model takes seconds to
        minutes for each.

        The weights and the gradients are left as they were (None stays None), and no memory or state
        dropout is drawn."""
        if not isinstance(batch_size, int) or isinstance(batch_size, bool):
            raise TypeError(f"batch_size must be an int, got {batch_size!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1")
        check_bool("documents", documents)
        if self._model_tensors() != self.tensors:
            self._forget_model()
        device, seq, b = self.model.device, self.wrapper.seq_len, batch_size
        # one segment's inputs (their values do not matter: only shapes select a graph)
        x = torch.zeros(b, seq + (0 if documents else 1), dtype=torch.long, device=device)
        labels = torch.zeros(b, seq, dtype=torch.long, device=device) if documents else None
        had_no_grad = [p.grad is None for p in self.params]
        self._attach_grads()
        saved = [g.clone() for g in self.grads]
        captured = len(self.graphs)
        # as __call__ passes them: (b,) rows that start afresh while documents are read, else one flag
        fresh = torch.ones(b, dtype=torch.bool, device=device) if documents else self._constant(True)
        masked = torch.zeros(b, dtype=torch.long, device=device) if documents else None
        xl = compressed = layer_inputs = None
        states = self._carried_states(None, b)
        seen = set()
        # the memories' shapes settle within blocks_to_refill segments (each pushes at least a block)
        limit = blocks_to_refill(self.model.config) + 2
        for _ in range(limit):
            inputs = (x, labels, xl, compressed, layer_inputs, None, fresh, self.scale, *states)
            key = self._key(inputs)
            if key in seen:  # the memories' shapes have settled: later segments run as these
                break
            seen.add(key)
            if xl is not None and masked is not None:
                self._run((x, labels, xl, compressed, layer_inputs, masked, fresh, self.scale, *states))
            _, xl, compressed, layer_inputs, *states = self._run(inputs)
        else:
            raise RuntimeError(f"TrainStep.warm_up: the memories' shapes did not settle within {limit} segments")
        for p, g, s, none in zip(self.params, self.grads, saved, had_no_grad):
            g.copy_(s)
            if none:  # as it was: an optimiser step would otherwise decay a parameter no step reached
                p.grad = None
        return len(self.graphs) - captured

    def _tokens_on_device(self, x: Tensor) -> Tensor:
        """x on the model's device, its token ids checked: on the CPU before the copy, which then
        needs no host sync (on the GPU the check waits for the device)."""
        device = self.model.device
        if x.device != device:
            self.model.check_tokens(x, on_model_device=False)
            return x.to(device, non_blocking=True)
        self.model.check_tokens(x)
        return x

    def _carried_memories(self, memories: Optional[Memories],
                          batch: int) -> tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
        """The XL, compressed and layer-input (memory_kv_from_inputs) tensors of memories passed in
        (None: none), checked, and their ``blocks_since_reset`` on the host (None: every entry valid)."""
        if memories is None or (memories.xl.shape[-2] == 0 and memories.compressed is None):
            return None, None, None, None  # empty memories: the no-memory graph
        memories = check_memories(memories, self.model.config, batch, self.model.device)
        since = memories.blocks_since_reset
        if since is not None:
            # the host copy of what the last call returned, or a read that waits for the device
            returned, on_host = self.returned_since
            since = on_host if since is returned else since.cpu()
        return memories.xl, memories.compressed, memories.xl_inputs, since

    def _carried_states(self, states: Optional[list[Tensor]], batch: int) -> list[Tensor]:
        """States passed in (checked), or placeholders that the first segment's fresh flag replaces."""
        config = self.model.config
        if states is None:
            return [torch.zeros(batch, config.num_state_vectors, config.dim, device=self.model.device)
                    for _ in self.model.states]
        return check_states(states, config, batch, self.model.device, torch.float32)

    def _constant(self, value: bool) -> Tensor:
        """A 0-d bool tensor on the model's device, made once per value (no host-to-device copy per step)."""
        if value not in self.constants:
            self.constants[value] = torch.tensor(value, device=self.model.device)
        return self.constants[value]

    def _run(self, inputs: tuple[Optional[Tensor], ...]) -> tuple[Optional[Tensor], ...]:
        """One segment's forward and backward, eagerly or by its graph."""
        if not self.cuda_graph:
            return self.forward_backward(*inputs)
        key = self._key(inputs)
        if key not in self.graphs:
            saved = [g.clone() for g in self.grads]  # warm-up runs accumulate gradients: undo them
            self.graphs[key] = CapturedSegment(self.forward_backward, inputs, self.pool)
            for g, s in zip(self.grads, saved):
                g.copy_(s)
        return self.graphs[key](inputs)

    @staticmethod
    def _key(inputs: tuple[Optional[Tensor], ...]) -> tuple:
        """What selects a segment's graph: the shape and dtype of each input (None stays None)."""
        return tuple(None if t is None else (tuple(t.shape), t.dtype) for t in inputs)

    def forward_backward(self, x: Tensor, labels: Optional[Tensor], xl: Optional[Tensor], compressed: Optional[Tensor],
                         xl_inputs: Optional[Tensor], since: Optional[Tensor], fresh: Tensor, scale: Tensor,
                         *states: Tensor) -> tuple[Optional[Tensor], ...]:
        """Loss of one segment from these memories and states; backward of ``scale`` x the loss.
        x: (b, max_seq_len + 1) tokens (labels None: the mean loss of the shifted tokens), or
        (b, max_seq_len) inputs with their labels (the summed loss over the labelled positions).
        since: (b,) blocks of each row's current document in the memories (older entries masked),
        or None (all valid). fresh: 0-d or (b,) bool, rows that start from the initial states.
        xl, compressed, xl_inputs: the memories' tensors (see ``Memories``), None for none.
        Returns (loss, xl, compressed, xl_inputs, *states) for the next segment, all detached."""
        memories = None
        if xl is not None:
            memories = Memories(xl=xl, compressed=compressed, blocks_since_reset=since,
                                blocks_until_valid=0 if since is None else blocks_to_refill(self.model.config),
                                xl_inputs=xl_inputs)
        initial = self.model.initial_states(x.shape[0])
        states = [torch.where(fresh.reshape(-1, 1, 1), init, s) for init, s in zip(initial, states)]
        # Autocast caches each weight's cast until the outermost autocast region ends; inside a
        # caller's region that is after this call, so casts made before it would be reused here
        # (a graph would read memory outside its pool) and casts made here would outlive it (the
        # next call would reuse casts of weights the optimiser has changed since, a graph would
        # read freed memory). The cache is emptied before and after (the backward keeps what it saved).
        torch.clear_autocast_cache()
        # bf16 autocast on CUDA only, as train.py: a CPU step is the full-precision reference.
        with torch.autocast(x.device.type, dtype=self.amp_dtype or torch.bfloat16,
                            enabled=self.amp_dtype is not None and x.is_cuda):
            if labels is None:
                loss, memories, states = self.model(x, return_loss=True, xl_memories=memories, states=states)
            else:
                logits, memories, states = self.model(x, xl_memories=memories, states=states)
                loss = self.model.loss(logits, labels, reduction="sum")
        torch.clear_autocast_cache()
        (loss * scale).backward()
        return loss.detach(), memories.xl, memories.compressed, memories.xl_inputs, *states

    def _attach_grads(self) -> None:
        """Give every parameter its persistent gradient buffer (the graphs add into those very
        tensors), keeping any gradient the caller accumulated since the last optimiser step."""
        if not self.grads:
            self.grads = [torch.zeros_like(p) for p in self.params]
        cleared = []
        for p, buffer in zip(self.params, self.grads):
            if p.grad is None:
                cleared.append(buffer)
            elif p.grad is not buffer:
                buffer.copy_(p.grad)
            p.grad = buffer
        if cleared:
            torch._foreach_zero_(cleared)


class ResetSchedule:
    """Where rows start new documents during one TrainStep call, followed on the host.

    A row that starts a document gets the initial states and must not attend to the entries its
    memories hold from before (the model masks them, from ``blocks_since_reset``). Which rows reset
    at which segment is known before the call, and memory dropout is drawn on the host, so the
    blocks of its current document that each row's memories hold are known too: the mask's input
    is computed here, and the masked graph runs only while some row still holds older entries.
    """

    def __init__(self, reset: Tensor, since: Optional[Tensor], config: BlockRecurrentConfig,
                 device: torch.device) -> None:
        self.reset, self.device = reset, device
        self.refill = blocks_to_refill(config)  # pushes after which a row holds nothing older
        self.blocks = config.max_seq_len // config.block_width  # pushes per segment
        self.since = torch.full((reset.shape[0],), self.refill) if since is None else since.clamp(max=self.refill)

    def segment(self, i: int, everyone: bool, has_memories: bool) -> tuple[Tensor, Optional[Tensor]]:
        """Segment i's inputs: the rows that start from the initial states ((b,) bool) and the
        memories' blocks_since_reset ((b,) long, or None: no row holds an entry to mask)."""
        rows = self.reset[:, i]
        fresh = rows | everyone
        since = torch.where(rows, 0, self.since) if has_memories else torch.full_like(self.since, self.refill)
        masked = bool((since < self.refill).any())
        self.since = (since + self.blocks).clamp(max=self.refill)  # after the segment's pushes
        return self._to_device(fresh), self._to_device(since) if masked else None

    def carried(self, memories: Memories) -> Memories:
        """The call's final memories with the mask of entries older than each row's document, if any."""
        if not bool((self.since < self.refill).any()):
            return memories
        return replace(memories, blocks_since_reset=self._to_device(self.since),
                       blocks_until_valid=self.refill - int(self.since.min()))

    def _to_device(self, t: Tensor) -> Tensor:
        """A small host tensor on the device without waiting for it (pinned, non-blocking)."""
        if self.device.type != "cuda":
            return t.to(self.device)
        return t.pin_memory().to(self.device, non_blocking=True)


def checked_loss_scale(loss_scale: object) -> Union[float, Tensor]:
    """``loss_scale`` as a number or a 0-d tensor (what ``Tensor.fill_`` takes; a GradScaler's scale
    is (1,)); a clear error unless it is a finite number >= 0 or a one-element float tensor. A
    tensor's value is checked only on the CPU: on a GPU, reading it would wait for the device."""
    if isinstance(loss_scale, Tensor):
        if loss_scale.numel() != 1 or not loss_scale.is_floating_point():
            raise TypeError(f"loss_scale must be a number or a one-element float tensor, got a tensor of shape "
                            f"{tuple(loss_scale.shape)} and dtype {loss_scale.dtype}")
        loss_scale = loss_scale.reshape(())
        if loss_scale.device.type != "cpu":
            return loss_scale
        value = loss_scale.item()
    elif isinstance(loss_scale, (int, float)) and not isinstance(loss_scale, bool):
        value = loss_scale
    else:
        raise TypeError(f"loss_scale must be a number or a one-element float tensor, got {loss_scale!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"loss_scale must be finite and >= 0 (it multiplies the gradients), got {value!r}")
    return loss_scale


class CapturedSegment:
    """A function of fixed-shape tensors (None stays None) captured as a CUDA graph.

    Inputs are copied into static buffers before each replay; the outputs are the graph's own
    tensors, overwritten by its next replay. Graphs share one memory pool, which is safe because
    they replay one at a time on one stream and every output is read (copied into the next
    graph's inputs) before another graph replays.
    """

    def __init__(self, fn: Callable[..., tuple[Optional[Tensor], ...]], inputs: tuple[Optional[Tensor], ...],
                 pool: object) -> None:  # pool: torch.cuda.graph_pool_handle()
        self.inputs = tuple(None if t is None else t.clone() for t in inputs)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.outputs = fn(*self.inputs)

    def __call__(self, inputs: tuple[Optional[Tensor], ...]) -> tuple[Optional[Tensor], ...]:
        """Replay on these inputs (same shapes as captured)."""
        for static, t in zip(self.inputs, inputs):
            if static is not None:
                static.copy_(t)
        self.graph.replay()
        return self.outputs
