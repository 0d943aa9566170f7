"""On a CUDA GPU (H100/H200; not in CI): the flash kernel really serves every attention in bf16.

Run with ``pytest -m gpu tests`` on a GPU machine. Restricting SDPA to the flash backend makes any
call that flash cannot serve (a dense mask, an unsupported shape) raise instead of silently
falling back, so a passing run proves the flash kernel ran.
"""

from __future__ import annotations

import inspect
from unittest import mock

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode

from block_recurrent_transformer_pytorch import BlockRecurrentTransformer, RecurrentTrainerWrapper
from block_recurrent_transformer_pytorch.attention import MemoryRows, reference_attention, sdpa_attention

from .helpers import (SEARCH_PATTERNS, assert_search_matches_reference, routed_search_both_ways, run_segments,
                      search_case)

pytestmark = pytest.mark.gpu

SEED_CONFIG = dict(num_tokens=256, dim=512, depth=6, dim_head=64, heads=8, max_seq_len=1024, block_width=512,
                   num_state_vectors=512, recurrent_layers=(4,), use_flash_attn=True)


def _model(**overrides) -> BlockRecurrentTransformer:
    torch.manual_seed(0)
    return BlockRecurrentTransformer(**{**SEED_CONFIG, **overrides}).cuda()


def _gates_of_their_own(model: BlockRecurrentTransformer) -> None:
    """attention_gate: every head's gate weights drawn at the scale that spreads its gate over (0, 2) (logits
    of about unit size), rather than the gate of exactly 1 it starts with."""
    for attention, _ in model.layers:
        attention.head_gate.normal_(std=model.config.dim ** -0.5)


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("compressed", [False, True])
def test_flash_backend_serves_training_and_matches_math(compressed):
    model = _model(use_compressed_mem=compressed)
    wrapper = RecurrentTrainerWrapper(model)
    x = torch.randint(0, 256, (2, 3 * 1024 + 1), device="cuda")
    results = {}
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.MATH):
        model.zero_grad(set_to_none=True)
        with sdpa_kernel(backend), torch.autocast("cuda", dtype=torch.bfloat16):
            loss, memories, _ = wrapper(x, return_memories_and_states=True)
        loss.backward()
        results[backend] = (loss.detach(), model.token_emb.weight.grad.clone(), memories.keys_values())
    flash, math = results[SDPBackend.FLASH_ATTENTION], results[SDPBackend.MATH]
    assert _relative_error(flash[0], math[0]) < 1e-2
    assert _relative_error(flash[1], math[1]) < 5e-2
    assert _relative_error(flash[2], math[2]) < 2e-2


@pytest.mark.parametrize("preset_options", [False, True])
def test_documents_with_resets_train_on_flash_alone_and_match_math(preset_options):
    """Documents read row by row, some rows starting a new document in the second segment (their
    memories masked for its first block): with flash enabled no attention runs the masked kernel
    (``MemoryRows``: one variable-length flash call), and loss and gradients are math's with the mask
    written out.
    preset_options: the long-documents preset's model options (blocks of 1024, 4 key/value heads)."""
    options = dict(block_width=1024, max_seq_len=2048, memory_kv_from_inputs=True, rotary_dim=32,
                   kv_heads=4) if preset_options else {}
    model = _model(**options)
    wrapper = RecurrentTrainerWrapper(model)
    seg = model.config.max_seq_len
    g = torch.Generator().manual_seed(0)
    x, labels = (torch.randint(0, 256, (4, 2 * seg), generator=g).cuda() for _ in range(2))
    reset = torch.tensor([[True, False], [True, True], [True, False], [True, True]], device="cuda")
    results, kernels = {}, {}
    for backend in ([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION], [SDPBackend.MATH]):
        model.zero_grad(set_to_none=True)
        recorder = _AttentionKernels()
        with sdpa_kernel(backend), torch.autocast("cuda", dtype=torch.bfloat16), recorder:
            loss = wrapper(x, labels=labels, reset=reset)
        loss.backward()
        results[backend[0]] = (loss.detach(), model.token_emb.weight.grad.clone())
        kernels[backend[0]] = {name for name, _ in recorder.calls}
    assert kernels[SDPBackend.FLASH_ATTENTION] == {FLASH, VARLEN}  # the band, and the blocks after resets
    assert not {FLASH, VARLEN} & kernels[SDPBackend.MATH]  # the caller's choice of backends holds for direct calls
    flash, math = results[SDPBackend.FLASH_ATTENTION], results[SDPBackend.MATH]
    assert _relative_error(flash[0], math[0]) < 1e-2
    assert _relative_error(flash[1], math[1]) < 5e-2


def test_bf16_flash_matches_fp32_reference():
    model = _model()
    reference = _model(use_flash_attn=False)
    reference.load_state_dict(model.state_dict())
    x = torch.randint(0, 256, (2, 1024), device="cuda")
    with torch.no_grad():
        expected, _, _ = reference(x)
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
            got, _, _ = model(x)
    assert _relative_error(got, expected) < 2e-2


class _AttentionKernels(TorchDispatchMode):
    """Records every attention kernel call (SDPA's and direct ones alike): its op and query rows (all
    rows of the batch for the variable-length kernel, whose queries are packed along dimension 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if "attention" in name and "backward" not in name:
            self.calls.append((name, args[0].shape[0] if name == VARLEN else args[0].shape[-2]))
        return func(*args, **(kwargs or {}))


FLASH = "_scaled_dot_product_flash_attention"
VARLEN = "_flash_attention_forward"


def _attention_against_reference(kv_heads: int, mask) -> list[tuple[str, int]]:
    """A block's queries (n = 256) over [memories | block] (m = 768), lower-right causal: bf16
    sdpa_attention under autocast against the fp32 reference, outputs and gradients. Returns the
    attention kernels it ran."""
    torch.manual_seed(0)
    n, m = 256, 768
    q = torch.randn(2, 8, n, 64, device="cuda", requires_grad=True)
    k, v = (torch.randn(2, kv_heads, m, 64, device="cuda", requires_grad=True) for _ in range(2))
    grad = torch.randn(2, 8, n, 64, device="cuda")
    recorder = _AttentionKernels()
    with recorder, torch.autocast("cuda", dtype=torch.bfloat16):
        got = sdpa_attention(q, k, v, causal=True, scale=0.125, mask=mask)
    got_grads = torch.autograd.grad(got.float(), (q, k, v), grad)
    expected = reference_attention(q, k, v, causal=True, scale=0.125, mask=mask)
    expected_grads = torch.autograd.grad(expected, (q, k, v), grad)
    assert _relative_error(got, expected) < 1e-2
    for got_grad, expected_grad in zip(got_grads, expected_grads):
        assert _relative_error(got_grad, expected_grad) < 2e-2
    if isinstance(mask, MemoryRows):  # the entries a row may not see get no gradient, exactly
        hidden = ~mask.mask(n, m)[:, 0, 0, :, None]  # (b, m, 1)
        for grad_kv in got_grads[1:]:
            assert torch.count_nonzero(grad_kv * hidden[:, None]) == 0
    return recorder.calls


@pytest.mark.parametrize("kv_heads", [1, 4, 8])
def test_causal_attention_over_memories_runs_flash_on_its_band_and_matches_the_reference(kv_heads):
    """No mask: one flash call on the n query rows alone (no padding rows)."""
    assert _attention_against_reference(kv_heads, None) == [(FLASH, 256)]


@pytest.mark.parametrize("kv_heads", [1, 4])
def test_memory_rows_run_one_variable_length_flash_call_and_match_the_reference(kv_heads):
    """Rows that started a new document see no memories (``MemoryRows``): one call of the flash
    kernel's variable-length form over both rows (2 x 256 queries), no masked kernel; the hidden
    memories' keys and values get no gradient."""
    rows = MemoryRows(torch.tensor([512, 0], device="cuda"))
    assert _attention_against_reference(kv_heads, rows) == [(VARLEN, 512)]


@pytest.mark.parametrize("kv_heads", [1, 4])
def test_memory_rows_of_one_query_do_not_reach_the_variable_length_kernel(kv_heads):
    """One query a row (decoding's first token of a block) with a row reset, bf16 under autocast: the
    mask written out, no variable-length call (torch 2.11's fails there with grouped heads), and the
    fp32 reference's output."""
    torch.manual_seed(0)
    q = torch.randn(2, 8, 1, 64, device="cuda")
    k, v = (torch.randn(2, kv_heads, 513, 64, device="cuda") for _ in range(2))
    rows = MemoryRows(torch.tensor([512, 0], device="cuda"))
    recorder = _AttentionKernels()
    with recorder, torch.autocast("cuda", dtype=torch.bfloat16):
        got = sdpa_attention(q, k, v, causal=True, scale=0.125, mask=rows)
    assert VARLEN not in {name for name, _ in recorder.calls}
    assert _relative_error(got, reference_attention(q, k, v, causal=True, scale=0.125, mask=rows)) < 1e-2


@pytest.mark.parametrize("kv_heads", [1, 4])
@pytest.mark.parametrize("visible", [(512, 0), (256, 512), (0, 256)])
def test_memory_rows_of_two_blocks_run_one_variable_length_flash_call_and_match_the_reference(kv_heads, visible):
    """Memories of two blocks of 256 (``xl_memory_blocks=2``), each row seeing both, the newest or
    none: one variable-length flash call, no masked kernel."""
    rows = MemoryRows(torch.tensor(visible, device="cuda"))
    assert _attention_against_reference(kv_heads, rows) == [(VARLEN, 512)]


@pytest.mark.parametrize("compressed, compile, from_inputs, shift, mixing",
                         [(False, False, False, False, False), (True, False, False, False, False),
                          (True, True, False, False, False), (True, False, True, False, False),
                          (True, False, True, True, False), (False, True, True, False, True)])
def test_cuda_graph_decoding_equals_the_full_forward(compressed, compile, from_inputs, shift, mixing):
    """fp32: every logit of graph-replayed decoding over 1100 tokens (two block ends, one segment end)
    equals the full forward's, the step compiled or not, also with memories projected from the layer
    inputs (from_inputs) and with token_shift (shift: the cache's latest inputs, zeros at a block's
    start), and with value_residual, unet_skips, embedding_mixing, attention_gate and logit_softcap=2 (mixing). A
    compiled step serves later decoders with other prompt lengths without compiling again, and after a
    second batch size any batch size."""
    from block_recurrent_transformer_pytorch.generation import CachedDecoder

    model = _model(use_compressed_mem=compressed, memory_kv_from_inputs=from_inputs, token_shift=shift,
                   value_residual=mixing, unet_skips=mixing, embedding_mixing=mixing, attention_gate=mixing,
                   logit_softcap=2.0 if mixing else None).eval()  # 2: small enough to bite
    if mixing:  # mixes and gates of their own: the embeddings reach every layer's input and what its memory keeps
        with torch.no_grad():
            model.embedding_mix.copy_(torch.tensor([0.8, 0.3], device="cuda").repeat(len(model.layers) - 1))
            _gates_of_their_own(model)
    x = torch.randint(0, 256, (5, 1100), device="cuda")
    with torch.no_grad():
        first, memories, states = model(x[:, :1024])
        second, _, _ = model(x[:, 1024:], xl_memories=memories, states=states)
        expected = torch.cat((first, second), dim=1)

        def decoder_for(rows: int) -> CachedDecoder:
            return CachedDecoder(model, *model.prepare(rows), use_cuda_graph=True, compile=compile)

        decoder = decoder_for(2)
        got = [decoder.append(x[:2, :100])] + [decoder.append(x[:2, t:t + 1]) for t in range(100, 1100)]
        assert decoder.graph is not None
        # cuDNN's convolution (the compressor) runs in TF32 by default: allow for its rounding
        assert _relative_error(torch.stack(got, dim=1), expected[:2, 99:]) < 1e-3
        if not compile:
            return
        for rows, prime, may_compile in ((2, 37, False), (3, 300, True), (5, 600, False)):
            with torch._dynamo.config.patch(error_on_recompile=not may_compile):
                again = decoder_for(rows)
                again.append(x[:rows, :prime])
                logits = again.append(x[:rows, prime:prime + 1])  # captured, replayed
            assert again.graph is not None
            assert _relative_error(logits, expected[:rows, prime]) < 1e-3


@pytest.mark.parametrize("compressed, from_inputs, shift",
                         [(False, False, False), (True, False, False), (True, True, False), (True, True, True)])
def test_cuda_graph_train_step_matches_eager(compressed, from_inputs, shift):
    """TrainStep replaying CUDA graphs gives the eager step's loss and gradients (fp32, dropout on:
    the same Python draws choose the same graphs), over three steps of gradient accumulation; also
    with the memory's keys/values projected from the layer inputs the graphs carry (from_inputs), and
    with token_shift (shift)."""
    import random

    from block_recurrent_transformer_pytorch import TrainStep

    model = _model(use_compressed_mem=compressed, memory_kv_from_inputs=from_inputs, token_shift=shift)
    wrapper = RecurrentTrainerWrapper(model, 0.3, 0.3)
    batches = [torch.randint(0, 256, (2, 4 * 1024 + 1)) for _ in range(3)]
    results = []
    for cuda_graph in (False, True):
        model.zero_grad(set_to_none=True)
        random.seed(0)
        step = TrainStep(wrapper, cuda_graph=cuda_graph, amp_dtype=None)
        losses = [step(x, loss_scale=1 / 3) for x in batches]
        results.append((torch.stack(losses), [p.grad.clone() for p in model.parameters()]))
    (eager_loss, eager_grads), (graph_loss, graph_grads) = results
    assert len(step.graphs) >= 2  # the first segment and the ones after it
    assert _relative_error(graph_loss, eager_loss) < 1e-4
    for g, e in zip(graph_grads, eager_grads):
        assert _relative_error(g, e) < 1e-3


@pytest.mark.parametrize("compile, preset_options, compressed, blocks, mixing",
                         [(False, False, True, 1, False), (True, False, True, 1, False), (True, True, True, 1, False),
                          (False, True, False, 1, False), (True, True, False, 1, False), (False, True, False, 2, False),
                          (True, True, False, 2, False), (True, True, False, 1, True)])
def test_cuda_graph_train_step_reading_documents_matches_eager(compile, preset_options, compressed, blocks, mixing):
    """Documents read row by row (labels with padding, per-row resets, memories and states carried
    across calls): the replayed graphs, the masked one among them, compiled or not, give the eager
    step's losses and gradients; TrainStep.warm_up captured every one of them before training.
    compressed: compressed memory, so that pre-reset entries stay masked for a while (fp32, graphs
    against eager). Without it, as the preset trains, a reset row's memories are hidden whole
    (``MemoryRows``: one variable-length flash call, so bf16 autocast): graphs and eager, both bf16, each against
    fp32 eager (where the hidden memories are a boolean mask), the graphs no further from it than
    eager is. preset_options: with the long-documents preset's model options too (memories projected
    from their inputs, half-rotary heads, 4 key/value heads), compiled as train.py runs it by default.
    blocks: xl_memory_blocks (two: a reset row sees none, one or both of its blocks).
    mixing: value_residual, unet_skips, embedding_mixing, attention_gate and logit_softcap=15 too (float32 logits
    under bf16 autocast)."""
    import random

    from block_recurrent_transformer_pytorch import TrainStep

    options = dict(memory_kv_from_inputs=True, rotary_dim=32, kv_heads=4) if preset_options else {}
    # two layers, the second recurrent: compiling every graph of the seed's six took over 170 s per
    # compiled case on an H200 (bench/RESULTS.md, 2026-11-30, seventh session)
    model = _model(use_compressed_mem=compressed, depth=2, recurrent_layers=(2,), xl_memory_blocks=blocks,
                   value_residual=mixing, unet_skips=mixing, embedding_mixing=mixing, attention_gate=mixing,
                   logit_softcap=15.0 if mixing else None, **options)
    if mixing:
        with torch.no_grad():
            _gates_of_their_own(model)
    wrapper = RecurrentTrainerWrapper(model, 0.2, 0.2)
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(3):
        x, labels = torch.randint(0, 256, (4, 2 * 1024), generator=g), torch.randint(0, 256, (4, 2 * 1024), generator=g)
        reset = torch.rand(4, 2, generator=g) < 0.3
        reset[0, 1] = True
        labels[0, 900:1024] = -100  # row 0's document ends inside the first segment, the next starts the second
        batches.append((x, labels, reset))
    results = []
    runs = [(False, None), (True, None)] if compressed else [(False, None), (False, torch.bfloat16),
                                                              (True, torch.bfloat16)]
    for cuda_graph, amp_dtype in runs:
        if cuda_graph and compile:
            model.compile(dynamic=False)
        model.zero_grad(set_to_none=True)
        random.seed(0)
        step = TrainStep(wrapper, cuda_graph=cuda_graph, amp_dtype=amp_dtype)
        captured = step.warm_up(4, documents=True)  # every graph, before training (as train.py)
        memories = states = None
        losses = []
        for x, labels, reset in batches:
            loss, memories, states = step(x, 1 / 3, labels=labels, reset=reset, xl_memories=memories, states=states,
                                          return_memories_and_states=True)
            losses.append(loss)
        results.append((torch.stack(losses), [p.grad.clone() for p in model.parameters()]))
    since = list(inspect.signature(TrainStep.forward_backward).parameters).index("since") - 1  # less self
    assert any(key[since] is not None for key in step.graphs)  # some segment ran with pre-reset entries hidden
    assert captured == len(step.graphs)  # warm_up captured them all: none was made while training
    if compressed:
        (eager_loss, eager_grads), (graph_loss, graph_grads) = results
        assert _relative_error(graph_loss, eager_loss) < 1e-4
        for g, e in zip(graph_grads, eager_grads):
            assert _relative_error(g, e) < 1e-3
        return
    (fp32_loss, fp32_grads), (eager_loss, eager_grads), (graph_loss, graph_grads) = results
    # bf16's rounding (and, compiled, other fusions) move both; the graphs may not move further
    assert _relative_error(graph_loss, fp32_loss) <= 2 * _relative_error(eager_loss, fp32_loss) + 1e-3
    # The gradient of a learned mixing scalar (the U-net skips' weights, the value and embedding mixes) is a sum over
    # every position and channel that mostly cancels (the skip weight's was -3.3e-5 on an H200), so bf16's rounding
    # moves it by percents in either run (mixing, compiled: 2.5% for the graphs, 0.7% eager): 5% instead of 1%
    # on top of twice eager's error. Every parameter's errors are printed (-rA keeps them) and every one
    # past its bound is named.
    errors = [(name, _relative_error(g, f), _relative_error(e, f)) for (name, _), g, e, f
              in zip(model.named_parameters(), graph_grads, eager_grads, fp32_grads)]
    print("(parameter, graphs' error, eager's error) against fp32:", errors)
    scalars = ("skip_weights", "value_mix", "embedding_mix")
    further = [(name, graphs, eager) for name, graphs, eager in errors
               if graphs > 2 * eager + (5e-2 if name.endswith(scalars) else 1e-2)]
    assert not further, f"(parameter, graphs' error, eager's error) against fp32: {further}"


@pytest.mark.parametrize("retrieval", ["exact", "query_routed", "routed"])
def test_knn_layer_on_cuda_matches_cpu_and_bf16_stays_close(retrieval):
    if retrieval == "routed":
        pytest.importorskip("colt5_attention", reason='knn_retrieval="routed" needs colt5-attention')
    """A kNN layer over three segments (the store holding 2,048 of 3,072 tokens, so the ring wraps):
    fp32 on the GPU gives the CPU's logits (the CUDA score budget and search path against the CPU's);
    bf16 autocast with flash for the other layers stays close to fp32 in loss and gradients."""
    knn = dict(knn_layers=(3,), knn_memory_size=2048, knn_top_k=32, knn_retrieval=retrieval)
    model = _model(**knn)
    x = torch.randint(0, 256, (2, 3 * 1024 + 1), device="cuda")
    with torch.no_grad():
        cpu_logits, _, _ = run_segments(model.cpu(), x[:, :-1].cpu(), 1024)
        gpu_logits, _, _ = run_segments(model.cuda(), x[:, :-1], 1024)
    assert _relative_error(gpu_logits.cpu(), cpu_logits) < 1e-4

    wrapper = RecurrentTrainerWrapper(model)
    results = []
    for dtype in (None, torch.bfloat16):
        model.zero_grad(set_to_none=True)
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]), \
                torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = wrapper(x)
        loss.backward()
        results.append((loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])))
    (fp32_loss, fp32_grads), (bf16_loss, bf16_grads) = results
    assert _relative_error(bf16_loss, fp32_loss) < 1e-2
    assert _relative_error(bf16_grads, fp32_grads) < 5e-2


# (batch, queries per row, store capacity, top k): the passkey kNN layer's search at batch 32
# (6 heads x 512 queries folded onto one kv head), and a small one
FUSED_SEARCH_SHAPES = {"realistic": (32, 3072, 262_144, 32), "small": (3, 1000, 8192, 32)}


@pytest.mark.parametrize("dtype, key_dtype, tolerance", [(torch.float32, torch.float32, 1e-2),
                                                         (torch.bfloat16, torch.bfloat16, 8e-2),
                                                         (torch.bfloat16, torch.float32, 8e-2)])
@pytest.mark.parametrize("pattern", SEARCH_PATTERNS)
@pytest.mark.parametrize("shape", list(FUSED_SEARCH_SHAPES))
def test_fused_search_on_cuda_finds_the_reference_scores(monkeypatch, shape, pattern, dtype, key_dtype, tolerance):
    """The CUDA search runs the fused Triton kernels (knn_kernels: group maxima without the scores
    written out, then the best groups' members) and finds what scoring every slot at once and
    torch.topk finds, over a store full and wrapped (its slack masked), partly filled (nothing
    masked: the kernels' unmasked variant), with resets (a row reaching nothing) and with rows
    reaching fewer entries than top k: the same found entries, scores equal up to the dot products'
    rounding (searches may round a score differently and pick other entries among near-ties; top
    scores are ~4). Each row's reference is computed alone (a batch's scores at once would not fit)."""
    from block_recurrent_transformer_pytorch import knn_kernels
    from block_recurrent_transformer_pytorch.knn_memory import search

    calls = []
    fused_top_k = knn_kernels.fused_top_k
    monkeypatch.setattr(knn_kernels, "fused_top_k", lambda *args: calls.append(args[2] is not None) or fused_top_k(*args))
    batch, queries, capacity, top_k = FUSED_SEARCH_SHAPES[shape]
    torch.manual_seed(0)
    q, keys, reachable, ranges = search_case(pattern, batch, queries, capacity, top_k, dtype, "cuda",
                                             key_dtype=key_dtype)
    budget = None if shape == "realistic" else 2 ** 20  # two chunks of queries over a full store, at either shape
    index, found = search(q, keys, reachable, top_k, budget=budget, ranges=ranges)
    assert calls and all(masked == (pattern != "partly_filled") for masked in calls), calls
    assert_search_matches_reference(q, keys, reachable, top_k, index, found, tolerance)


@pytest.mark.parametrize("dtype, key_dtype, tolerance", [(torch.float32, torch.float32, 1e-2),
                                                         (torch.bfloat16, torch.bfloat16, 8e-2),
                                                         (torch.bfloat16, torch.float32, 8e-2)])
@pytest.mark.parametrize("pattern", SEARCH_PATTERNS)
@pytest.mark.parametrize("shape", list(FUSED_SEARCH_SHAPES))
def test_routed_search_on_cuda_takes_the_kernels_and_finds_the_torch_paths_entries(shape, pattern, dtype, key_dtype,
                                                                                   tolerance):
    """routed_search on CUDA routes by an exact search over the group means (search's fused
    kernels where grouping pays: at the realistic shape) and scores its routed groups' members by
    the fused kernel (knn_kernels.member_scores, masking in every layout but the partly filled
    store's): the route holds each query's best groups by mean key (their scores within rounding
    of the reference's), and on that route the kernel finds what the torch path finds: the same
    found entries, reachable and distinct, scores equal up to the dot products' rounding; 32
    groups of 16 (the default knn_route_groups), every query in one chunk."""
    from block_recurrent_transformer_pytorch import knn_kernels

    batch, queries, capacity, top_k = FUSED_SEARCH_SHAPES[shape]
    torch.manual_seed(0)
    q, keys, reachable, ranges = search_case(pattern, batch, queries, capacity, top_k, dtype, "cuda",
                                             key_dtype=key_dtype)
    with mock.patch.object(knn_kernels, "group_maxima", side_effect=knn_kernels.group_maxima) as maxima:
        fused, expected, calls, (means, routable, route, routed) = routed_search_both_ways(q, keys, reachable, top_k,
                                                                                            32, ranges)
    assert maxima.called == (shape == "realistic")  # 16,384 group means: grouping pays
    assert calls and all(masked == (pattern != "partly_filled") for masked in calls), calls
    assert_search_matches_reference(q, means, routable, 32, route, routed, tolerance)
    assert_search_matches_reference(q, keys, reachable, top_k, *fused, tolerance, expected=expected)


def test_cuda_search_takes_the_torch_path_where_the_kernels_do_not_apply(monkeypatch):
    """Slots not a whole number of groups of 16 (or too few to group): the torch path, never the
    kernels, still finding the reference's entries."""
    from block_recurrent_transformer_pytorch import knn_kernels
    from block_recurrent_transformer_pytorch.knn_memory import search

    def no_kernels(*args):
        raise AssertionError("the fused kernels ran where they do not apply")

    monkeypatch.setattr(knn_kernels, "fused_top_k", no_kernels)
    torch.manual_seed(0)
    q, keys, reachable, _ = search_case("resets", 3, 300, 8192, 32, torch.bfloat16, "cuda")
    for slots in (keys.shape[-2] - 8, 2032):
        index, found = search(q, keys[..., :slots, :], reachable[:, :slots], 32)
        assert_search_matches_reference(q, keys[..., :slots, :], reachable[:, :slots], 32, index, found, 8e-2)


PASSKEY_MODEL = dict(num_tokens=256, dim=384, depth=4, heads=6, dim_head=64, max_seq_len=512, block_width=256,
                     num_state_vectors=128, recurrent_layers=(3,), use_flash_attn=True)
KNN = dict(knn_layers=(4,), knn_memory_size=262_144, knn_top_k=32)


@pytest.mark.parametrize("batch, knn", [(64, True), (160, True), (256, False)])
def test_training_at_large_batch_never_uses_cudnn_attention(batch, knn):
    """Issue 12: SDPA handed calls of a kNN model's step to cuDNN, whose backward failed at batch
    >= 64 on an H200. Three AdamW steps of the passkey model (three 512-token segments, memories
    carried, bf16 autocast, flash on) run with finite losses, and no SDPA call of ours would pick
    cuDNN though the caller leaves it enabled (torch's default)."""
    import torch.nn.functional as F

    assert torch.backends.cuda.cudnn_sdp_enabled()
    torch.manual_seed(0)
    model = BlockRecurrentTransformer(**PASSKEY_MODEL, **(KNN if knn else {})).cuda()
    wrapper = RecurrentTrainerWrapper(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    x = torch.randint(0, 256, (batch, 3 * 512 + 1), device="cuda")
    chosen = set()
    original = F.scaled_dot_product_attention

    def recording(q, k, v, **kwargs):
        chosen.add(SDPBackend(torch._fused_sdp_choice(
            q, k, v, attn_mask=kwargs.get("attn_mask"), dropout_p=0.0, is_causal=kwargs.get("is_causal", False),
            scale=kwargs.get("scale"), enable_gqa=kwargs.get("enable_gqa", False))))
        return original(q, k, v, **kwargs)

    losses = []
    F.scaled_dot_product_attention = recording
    try:
        for _ in range(3):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = wrapper(x)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
    finally:
        F.scaled_dot_product_attention = original
    assert chosen and SDPBackend.CUDNN_ATTENTION not in chosen, chosen
    assert all(torch.isfinite(torch.tensor(losses))), losses
    assert losses[-1] < losses[0]  # the same batch three times: the steps learn it


def test_muon_adamw_step_on_cuda_matches_the_cpu_step(tmp_path):
    """train.py's --optimizer muon on a GPU: one step of MuonAdamW (fused AdamW there, Muon's Newton-Schulz
    iterations in bf16, whose sums CUDA may round to bf16 as it goes) moves every weight of the
    long-documents model as the same step on the CPU does, each parameter's update within 5% of its norm
    (bf16's rounding of Muon's update; AdamW's two paths agree to fp32 rounding)."""
    import copy

    import train

    cfg = train.TrainConfig(**{**train.PRESETS["long-documents"], "doc_separator": 0, "out_dir": str(tmp_path)})
    torch.manual_seed(0)
    cpu = train.build_model(cfg)
    gpu = copy.deepcopy(cpu).cuda()
    for p in cpu.parameters():
        p.grad = torch.randn_like(p) * 1e-2
    for p, q in zip(cpu.parameters(), gpu.parameters()):
        q.grad = p.grad.cuda()
    steps = [train.build_optimizer(m, cfg, torch.device(d)) for m, d in ((cpu, "cpu"), (gpu, "cuda"))]
    assert all(isinstance(opt, train.MuonAdamW) for opt in steps)
    before = {name: p.detach().clone() for name, p in cpu.named_parameters()}
    for opt in steps:
        opt.step()
    for (name, a), b in zip(cpu.named_parameters(), gpu.parameters()):
        update_cpu, update_gpu = a.detach() - before[name], b.detach().cpu() - before[name]
        assert update_cpu.norm() > 0, name
        assert (update_gpu - update_cpu).norm() <= 0.05 * update_cpu.norm(), name


def test_batched_muon_on_cuda_agrees_with_torchs_muon(tmp_path):
    """BatchedMuon's batched bf16 products on the GPU against torch.optim.Muon's one matrix at a time, on
    the long-documents model's matrices: each update within 2% of its norm (bf16 rounding, in sums CUDA may
    round as it goes), over two steps."""
    import train

    cfg = train.TrainConfig(**{**train.PRESETS["long-documents"], "doc_separator": 0, "out_dir": str(tmp_path)})
    torch.manual_seed(0)
    matrices = [torch.nn.Parameter(p.detach().cuda()) for p in train.hidden_matrices(train.build_model(cfg))]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in matrices]
    optimizers = (torch.optim.Muon(matrices, lr=3e-3, adjust_lr_fn="match_rms_adamw"),
                  train.BatchedMuon(twins, lr=3e-3, adjust_lr_fn="match_rms_adamw"))
    for step in range(2):
        before = [p.detach().clone() for p in matrices]
        for p, q in zip(matrices, twins):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
            q.data.copy_(p.data)  # each step from the same weights: the updates compare, not their sums
        for opt in optimizers:
            opt.step()
        for i, (p, q, x) in enumerate(zip(matrices, twins, before)):
            reference, batched = p.detach() - x, q.detach() - x
            assert (batched - reference).norm() <= 2e-2 * reference.norm(), (step, i, tuple(p.shape))


def test_split_batched_muon_on_cuda_agrees_with_torchs_muon_on_separate_maps(tmp_path):
    """--muon-split-qkv on the GPU: BatchedMuon with the long-documents model's output_splits moves each
    fused projection's queries, keys and values as torch.optim.Muon moves them held as separate matrices,
    each map's update within 2% of its norm (bf16 rounding) in one step."""
    import train
    from training.optimizer import output_splits

    cfg = train.TrainConfig(**{**train.PRESETS["long-documents"], "doc_separator": 0, "out_dir": str(tmp_path)})
    torch.manual_seed(0)
    model = train.build_model(cfg).cuda()
    fused = train.hidden_matrices(model)
    splits = output_splits(model, fused)
    separate = [torch.nn.Parameter(part.detach().clone()) for p, rows in zip(fused, splits) for part in p.split(rows)]
    before = torch.cat([p.detach().flatten() for p in separate])
    for p in fused:
        p.grad = torch.randn_like(p)
    for q, grad in zip(separate, [g for p, rows in zip(fused, splits) for g in p.grad.split(rows)]):
        q.grad = grad.clone()
    torch.optim.Muon(separate, lr=3e-3, adjust_lr_fn="match_rms_adamw").step()
    train.BatchedMuon([{"params": fused, "output_splits": splits}], lr=3e-3, adjust_lr_fn="match_rms_adamw").step()
    parts = [part for p, rows in zip(fused, splits) for part in p.detach().split(rows)]
    start = 0
    for i, (reference, batched) in enumerate(zip(separate, parts)):
        x = before[start:start + reference.numel()].view_as(reference)
        start += reference.numel()
        update, expected = batched - x, reference.detach() - x
        assert (update - expected).norm() <= 2e-2 * expected.norm(), (i, tuple(x.shape))
