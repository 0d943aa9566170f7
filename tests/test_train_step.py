"""TrainStep (each segment's forward and backward on its own, replayed from a CUDA graph on GPU)
computes what the wrapper's loss.backward() computes; the kernels behind the fast path (padded
GEGLU width, precomputed rotary tables) change no result. The graph replay itself is checked on a
GPU (tests/test_gpu.py); here its eager twin, the very function that is captured, is."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from block_recurrent_transformer_pytorch import RecurrentTrainerWrapper, TrainStep
from block_recurrent_transformer_pytorch import train_step as train_step_module
from block_recurrent_transformer_pytorch.blocks import FeedForward
from block_recurrent_transformer_pytorch.positions import RotaryEmbedding

from .helpers import assert_train_step_equals_wrapper_backward, small_model, tokens


def _grads(model) -> list[torch.Tensor]:
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]


def _assert_step_matches_wrapper_backward(wrapper: RecurrentTrainerWrapper, x: torch.Tensor, **kwargs) -> None:
    """TrainStep's gradients (eagerly) equal those of the wrapper's loss.backward(), both from zero."""
    model = wrapper.transformer
    model.zero_grad(set_to_none=True)
    wrapper(x, **kwargs).backward()
    want = _grads(model)
    model.zero_grad(set_to_none=True)
    TrainStep(wrapper, cuda_graph=False, amp_dtype=None)(x, **kwargs)
    for got, expected in zip(_grads(model), want):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("from_inputs", [False, True])
def test_train_step_equals_wrapper_backward(compressed, from_inputs):
    """Same mean loss and gradients as (wrapper(x) * scale).backward(), memory and state dropout on
    (the same Python draws), compressed memory on/off, memory keys/values cached or projected from the
    layers' inputs, two recurrent layers, 5 segments."""
    model = small_model(use_compressed_mem=compressed, recurrent_layers=(1, 3),
                        memory_kv_from_inputs=from_inputs).train()
    reference = assert_train_step_equals_wrapper_backward(model)
    assert all(g.abs().sum() > 0 for g in reference)  # every parameter learns, both paths


def _read_across_calls(wrapper: RecurrentTrainerWrapper, run, batches: list, seed: int, loss_scale: float = 1.0):
    """Losses, gradients and the final memories and states of ``run`` (the wrapper, or a TrainStep on
    it) reading ``batches`` ((x, keywords) pairs) one call after another, memories and states carried."""
    model = wrapper.transformer
    model.zero_grad(set_to_none=True)
    random.seed(seed)
    memories = states = None
    losses = []
    for x, keywords in batches:
        kwargs = dict(xl_memories=memories, states=states, **keywords)
        if run is wrapper:
            loss, memories, states = run(x, True, **kwargs)
            (loss * loss_scale).backward()
        else:
            loss, memories, states = run(x, loss_scale, return_memories_and_states=True, **kwargs)
        losses.append(loss.detach())
    return torch.stack(losses), _grads(model), memories, states


def _assert_same_reading(wrapper: RecurrentTrainerWrapper, batches: list, seed: int, loss_scale: float = 1.0):
    """TrainStep (eagerly) gives the wrapper's losses, gradients, memories and states over ``batches``;
    returns both final memories (TrainStep's, the wrapper's) for further checks."""
    step = TrainStep(wrapper, cuda_graph=False, amp_dtype=None)
    want_loss, want_grads, want_mem, want_states = _read_across_calls(wrapper, wrapper, batches, seed, loss_scale)
    loss, grads, mem, states = _read_across_calls(wrapper, step, batches, seed, loss_scale)
    torch.testing.assert_close(loss, want_loss, rtol=1e-6, atol=1e-6)
    for got, want in zip(grads, want_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(mem.keys_values(), want_mem.keys_values())
    torch.testing.assert_close(mem.xl_inputs, want_mem.xl_inputs)  # None with memory_kv_from_inputs off
    for got, want in zip(states, want_states):
        torch.testing.assert_close(got, want)
        assert not got.requires_grad
    return mem, want_mem


@pytest.mark.parametrize("compressed", [False, True])
def test_train_step_carries_memories_and_states_as_the_wrapper(compressed):
    """Reading a long sequence across calls: memories and states passed in and returned, dropout on,
    give the wrapper's losses, gradients, memories and states; the returned ones are copies."""
    model = small_model(use_compressed_mem=compressed).train()
    wrapper = RecurrentTrainerWrapper(model, xl_memories_dropout=0.3, state_dropout=0.3)
    _assert_same_reading(wrapper, [(tokens(2, 2 * 16 + 1, seed=s), {}) for s in (1, 2, 3)], seed=5)


def _documents_batch(seed: int, segments: int = 4, seq: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs, labels and resets as a document reader gives them: row 0 starts documents at segments
    0 and 3 (the first padded after 5 positions), row 1 continues one document throughout."""
    x = tokens(2, segments * seq, seed=seed)
    labels = tokens(2, segments * seq, seed=seed + 100)
    labels[0, 2 * seq + 5:3 * seq] = -100  # row 0's first document ends 5 positions into segment 2
    reset = torch.zeros(2, segments, dtype=torch.bool)
    reset[0, [0, 3]] = True
    return x, labels, reset


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("from_inputs", [False, True])
def test_train_step_with_labels_and_resets_equals_the_wrapper(compressed, from_inputs):
    """Documents read row by row across three calls (labels with padding, per-row resets inside and
    at the start of calls, memories and states carried, dropout on): TrainStep's losses, gradients,
    memories (with their mask of pre-reset entries, and their layer inputs with
    memory_kv_from_inputs) and states are the wrapper's."""
    model = small_model(use_compressed_mem=compressed, memory_kv_from_inputs=from_inputs).train()
    wrapper = RecurrentTrainerWrapper(model, xl_memories_dropout=0.2, state_dropout=0.2)
    batches = []
    for seed in (1, 2, 3):
        x, labels, reset = _documents_batch(seed)
        batches.append((x, dict(labels=labels, reset=reset)))
    mem, want_mem = _assert_same_reading(wrapper, batches, seed=7, loss_scale=0.5)
    assert (mem.blocks_since_reset is None) == (want_mem.blocks_since_reset is None)
    if compressed:  # row 0's compressed memory still holds entries from before its reset a segment ago
        refill = 3  # pushes until nothing older is held (the same mask for any count from there)
        assert mem.blocks_since_reset.clamp(max=refill).tolist() == want_mem.blocks_since_reset.clamp(max=refill).tolist()
        assert mem.blocks_until_valid == want_mem.blocks_until_valid


@pytest.mark.parametrize("step", ["wrapper", "train_step"])
def test_a_document_after_a_reset_trains_as_from_a_fresh_start(step):
    """A row that reads document A, then document B from a reset, gets B's loss and gradients
    exactly as a fresh row reading B alone: nothing of A reaches B (compressed memory on, so A's
    entries are still held, masked, while B is read)."""
    model = small_model(use_compressed_mem=True).train()
    wrapper = RecurrentTrainerWrapper(model)
    run = wrapper if step == "wrapper" else TrainStep(wrapper, cuda_graph=False, amp_dtype=None)
    doc_a, doc_b = tokens(1, 2 * 16, seed=4), tokens(1, 3 * 16, seed=5)
    labels_b = tokens(1, 3 * 16, seed=6)
    after_a = torch.cat((doc_a, doc_b), dim=1)
    labels = torch.cat((torch.full((1, 2 * 16), -100), labels_b), dim=1)  # only B's positions count
    reset = torch.tensor([[True, False, True, False, False]])
    grads = []
    for x, y, r in ((after_a, labels, reset), (doc_b, labels_b, reset[:, 2:])):
        model.zero_grad(set_to_none=True)
        loss = run(x, labels=y, reset=r)
        if step == "wrapper":
            loss.backward()
        grads.append((loss.detach(), _grads(model)))
    (loss_after_a, grads_after_a), (loss_fresh, grads_fresh) = grads
    torch.testing.assert_close(loss_after_a, loss_fresh, rtol=1e-6, atol=1e-6)
    for got, want in zip(grads_after_a, grads_fresh):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


class EagerSegment:
    """CapturedSegment's stand-in on a CPU: runs the function twice at "capture", as the warm-up runs
    before a real capture do (accumulating gradients that TrainStep must undo), and records the graph's
    key; a replay runs the function eagerly."""

    keys: list = []

    def __init__(self, fn, inputs, pool) -> None:
        self.fn = fn
        for _ in range(2):
            fn(*inputs)
        EagerSegment.keys.append(TrainStep._key(inputs))

    def __call__(self, inputs):
        return self.fn(*inputs)


@pytest.mark.parametrize("compressed, from_inputs", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("documents", [False, True])
def test_warm_up_captures_every_graph_training_replays_and_changes_nothing(monkeypatch, compressed, from_inputs,
                                                                           documents):
    """After warm_up, three calls of training (documents with per-row resets, or plain sequences;
    memories and states carried; memory and state dropout on) capture no new graph, and give the
    losses and gradients of the eager step and of a TrainStep that was not warmed up (its captures
    during training undo their warm-up runs' gradients). warm_up itself leaves the weights,
    the gradients and Python's random state as they were, also when called again after training."""
    monkeypatch.setattr(train_step_module, "CapturedSegment", EagerSegment)
    monkeypatch.setattr(EagerSegment, "keys", [])
    model = small_model(use_compressed_mem=compressed, memory_kv_from_inputs=from_inputs).train()
    wrapper = RecurrentTrainerWrapper(model, xl_memories_dropout=0.3, state_dropout=0.3)
    if documents:
        batches = [(x, dict(labels=labels, reset=reset)) for x, labels, reset in map(_documents_batch, (1, 2, 3))]
    else:
        batches = [(tokens(2, 4 * 16 + 1, seed=s), {}) for s in (1, 2, 3)]
    step = TrainStep(wrapper, cuda_graph=False, amp_dtype=None)
    step.cuda_graph = True  # graphs made by EagerSegment, on the CPU
    weights = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():  # a gradient the caller accumulated before: kept
        p.grad = torch.full_like(p, 0.5)
    random.seed(11)
    captured = step.warm_up(2, documents=documents)

    assert random.getstate() == (random.seed(11) or random.getstate())
    assert captured == len(EagerSegment.keys) == len(step.graphs)
    assert captured == (2 if not compressed else 3) * (2 if documents else 1) - (1 if documents else 0)
    for p, w in zip(model.parameters(), weights):
        assert torch.equal(p, w) and torch.equal(p.grad, torch.full_like(p, 0.5))

    got = _read_across_calls(wrapper, step, batches, seed=5)
    assert len(EagerSegment.keys) == captured  # nothing captured while training
    # again, its replays now scaled by the last call's loss scale: nothing new, the gradients kept
    assert step.warm_up(2, documents=documents) == 0
    for p, g in zip(model.parameters(), got[1]):
        assert torch.equal(p.grad, g)
    want = _read_across_calls(wrapper, TrainStep(wrapper, cuda_graph=False, amp_dtype=None), batches, seed=5)
    unwarmed = TrainStep(wrapper, cuda_graph=False, amp_dtype=None)
    unwarmed.cuda_graph = True  # captures as training meets each kind of segment
    for other in (want, _read_across_calls(wrapper, unwarmed, batches, seed=5)):
        torch.testing.assert_close(got[0], other[0], rtol=1e-6, atol=1e-6)
        for g, w in zip(got[1], other[1]):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)


def test_warm_up_rejects_what_it_cannot_prepare():
    model = small_model()
    step = TrainStep(RecurrentTrainerWrapper(model), cuda_graph=False, amp_dtype=None)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="batch_size"):
            step.warm_up(bad)
    for bad in (2.0, True):
        with pytest.raises(TypeError, match="batch_size"):
            step.warm_up(bad)
    with pytest.raises(TypeError, match="documents"):
        step.warm_up(2, documents="yes")
    assert step.warm_up(2, documents=True) == 0  # eager: the segments run, no graph is captured
    assert all(p.grad is None for p in model.parameters())  # None stays None


def test_train_step_continues_memories_masked_by_a_model_reset():
    """Memories the model returned right after a per-row reset (row 0 still masks its old entries)
    continue in TrainStep exactly as in the wrapper."""
    model = small_model(use_compressed_mem=True).train()
    wrapper = RecurrentTrainerWrapper(model)
    with torch.no_grad():
        _, memories, states = model(tokens(2, 16))
        _, memories, states = model(tokens(2, 8), xl_memories=memories, states=states, reset=torch.tensor([True, False]))
    assert memories.blocks_since_reset is not None
    _assert_step_matches_wrapper_backward(wrapper, tokens(2, 2 * 16 + 1, seed=9), xl_memories=memories, states=states)


def test_labels_and_resets_are_checked():
    model = small_model().train()
    wrapper = RecurrentTrainerWrapper(model)
    step = TrainStep(wrapper, cuda_graph=False, amp_dtype=None)
    x, labels, reset = _documents_batch(1)
    for run in (wrapper, step):
        with pytest.raises(ValueError, match="labels must be an integer tensor of x's shape"):
            run(x, labels=labels[:, :-1])
        bad = labels.clone()
        bad[0, 0] = 64
        with pytest.raises(ValueError, match=r"labels hold targets in \[.*, 64\]; allowed are 0..63"):
            run(x, labels=bad)
        with pytest.raises(ValueError, match=r"reset must be a bool tensor of shape \(batch, segments\) = \(2, 4\)"):
            run(x, labels=labels, reset=reset[:, :3])
        with pytest.raises(ValueError, match="with labels: the inputs only"):
            run(tokens(2, 4 * 16 + 1), labels=labels)
    # labels of any integer type (int64 or not, as a token file's uint16 read as int32) give the same loss
    torch.testing.assert_close(wrapper(x, labels=labels.int(), reset=reset), wrapper(x, labels=labels, reset=reset))
    # nothing labelled: a zero loss and no gradient, not NaN
    model.zero_grad(set_to_none=True)
    loss = step(x, labels=torch.full_like(labels, -100), reset=reset)
    assert loss.item() == 0 and all(not g.any() for g in _grads(model))


def test_train_step_with_activation_checkpointing_equals_wrapper_backward():
    model = small_model(activation_checkpointing=True).train()
    _assert_step_matches_wrapper_backward(RecurrentTrainerWrapper(model), tokens(2, 3 * 16 + 1))


def test_train_step_accumulates_and_survives_zero_grad():
    """Gradients add up over calls like repeated backward(); zero_grad (set_to_none or not) restarts."""
    model = small_model().train()
    wrapper = RecurrentTrainerWrapper(model)
    step = TrainStep(wrapper, cuda_graph=False, amp_dtype=None)
    a, b = tokens(2, 33, seed=1), tokens(2, 33, seed=2)
    (wrapper(a) + wrapper(b)).backward()
    reference = _grads(model)
    for set_to_none in (True, False):
        model.zero_grad(set_to_none=set_to_none)
        step(a)
        step(b)
        for got, want in zip(_grads(model), reference):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    # a gradient the caller put there is kept and added to
    model.zero_grad(set_to_none=True)
    wrapper(a).backward()
    step(b)
    for got, want in zip(_grads(model), reference):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_train_step_follows_the_model_when_it_changes():
    """Cast to float64, a parameter frozen: the next step starts afresh (a GPU step would capture
    new graphs) and still computes the wrapper's gradient; the frozen parameter gets none."""
    model = small_model().train()
    wrapper = RecurrentTrainerWrapper(model)
    step = TrainStep(wrapper, cuda_graph=False)
    x = tokens(2, 33)
    step(x)
    model.double()
    frozen = model.token_emb.weight.requires_grad_(False)
    model.zero_grad(set_to_none=True)
    wrapper(x).backward()
    reference = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=False)
    step(x)
    assert frozen.grad is None
    for p, want in zip(model.parameters(), reference):
        if want is not None:
            assert p.grad.dtype == torch.float64
            torch.testing.assert_close(p.grad, want, rtol=1e-9, atol=1e-12)


def test_train_step_rejects_what_it_cannot_do():
    model = small_model()
    with pytest.raises(ValueError, match="bptt_segments"):
        TrainStep(RecurrentTrainerWrapper(model, bptt_segments=2), cuda_graph=False)
    with pytest.raises(ValueError, match="CUDA"):
        TrainStep(RecurrentTrainerWrapper(model), cuda_graph=True)
    with pytest.raises(ValueError, match="knn_layers"):
        TrainStep(RecurrentTrainerWrapper(small_model(knn_layers=(3,), knn_memory_size=64)), cuda_graph=False)
    with pytest.raises(TypeError, match="RecurrentTrainerWrapper"):
        TrainStep(model, cuda_graph=False)
    step = TrainStep(RecurrentTrainerWrapper(model), cuda_graph=False, amp_dtype=None)
    with pytest.raises(ValueError, match="k \\* max_seq_len \\+ 1"):
        step(tokens(2, 20))
    with pytest.raises(ValueError, match="token ids in"):
        step(torch.full((2, 17), 1000))


@pytest.mark.parametrize("dim, mult, glu, widths", [(512, 4, True, (1365, 1368)), (100, 1.5, False, (150, 152))],
                         ids=["geglu", "gelu"])
def test_padded_feedforward_equals_unpadded(dim, mult, glu, widths):
    """The hidden width padded to a multiple of 8 (GEGLU 1365 -> 1368 at dim 512; GELU 150 -> 152 at
    dim 100) gives the unpadded block's output and gradients."""
    torch.manual_seed(0)
    ff = FeedForward(dim, mult, glu)
    assert (ff.hidden, ff.padded) == widths
    x = torch.randn(2, 7, dim, requires_grad=True)
    ff(x).square().sum().backward()
    got = [x.grad.clone()] + [p.grad.clone() for p in ff.parameters()]
    x.grad = None
    ff.zero_grad()
    hidden = ff.proj_in(ff.norm(x))
    if glu:
        value, gate = hidden.chunk(2, dim=-1)
        hidden = value * F.gelu(gate)
    else:
        hidden = F.gelu(hidden)
    ff.proj_out(hidden).square().sum().backward()
    for a, b in zip(got, [x.grad] + [p.grad for p in ff.parameters()]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_feedforward_kinds_hold_the_same_weights():
    """GEGLU (hidden 2/3 * mult * dim, two input projections) and GELU (hidden mult * dim) hold the same
    2 * mult * dim ** 2 weights, so ff_glu compares the kinds at one parameter budget."""
    geglu, gelu = FeedForward(48, 3, glu=True), FeedForward(48, 3, glu=False)
    assert (geglu.hidden, gelu.hidden) == (96, 144)
    assert sum(p.numel() for p in geglu.parameters()) == sum(p.numel() for p in gelu.parameters()) == 2 * 3 * 48 ** 2 + 48


def test_rotary_tables_stay_exact_in_any_dtype():
    """Precomputed tables equal tables computed afresh, also after .bfloat16()/.double() (which
    would round or re-type buffers) and outside the precomputed range."""
    rotary = RotaryEmbedding(16, max_memory=48, block_width=32)
    fresh = rotary.compute(torch.arange(-48, 32))
    for cast in (lambda m: m, lambda m: m.bfloat16(), lambda m: m.double(), lambda m: m.float()):
        cast(rotary)
        assert rotary.tables.dtype == torch.float32
        assert torch.equal(torch.stack(rotary(-48, 80)), fresh)
        assert torch.equal(torch.stack(rotary(0, 32)), fresh[:, 48:])
    assert torch.equal(torch.stack(rotary(30, 10)), rotary.compute(torch.arange(30, 40)))
    # a move or no-op keeps the very tensor (a captured CUDA graph reads its address)
    address = rotary.tables.data_ptr()
    rotary.to("cpu").float()
    assert rotary.tables.data_ptr() == address


def test_loss_scales_reuse_one_buffer_and_must_be_finite_and_non_negative():
    """Any number of distinct scales (numbers or tensors, e.g. a GradScaler's (1,)) fill one device
    buffer in place; a tensor per value would leak, one per tensor scale by identity."""
    model = small_model().train()
    step = TrainStep(RecurrentTrainerWrapper(model), cuda_graph=False, amp_dtype=None)
    x = tokens(2, 33)
    step(x)
    constants, scale = len(step.constants), step.scale
    for i in range(10):
        step(x, loss_scale=1 + i / 7)
        step(x, loss_scale=torch.full((1,), 1 + i / 7))
    assert len(step.constants) == constants and step.scale is scale
    model.zero_grad()
    step(x, loss_scale=torch.tensor(0.5))
    half = _grads(model)
    model.zero_grad()
    step(x)
    for p, g in zip(model.parameters(), half):
        torch.testing.assert_close(g, p.grad * 0.5)
    for bad in (float("nan"), float("inf"), -1.0, torch.tensor(float("nan"))):
        with pytest.raises(ValueError, match="loss_scale must be finite and >= 0"):
            step(x, loss_scale=bad)
    for bad in ("1", True, torch.ones(2), torch.tensor(2)):
        with pytest.raises(TypeError, match="loss_scale must be a number or a one-element float tensor"):
            step(x, loss_scale=bad)


def test_ff_glu_picks_every_layers_feedforward():
    """The config's ff_glu reaches each layer: GEGLU's input projection makes a value and a gate per
    hidden unit, GELU's one."""
    for glu in (True, False):
        model = small_model(ff_glu=glu)
        for layer in model.layers:
            feed_forward = layer[1]
            assert feed_forward.glu is glu
            assert feed_forward.proj_in.weight.shape == ((2 if glu else 1) * feed_forward.hidden, 32)
