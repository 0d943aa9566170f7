"""The model, the fast path's choice, and parameters a run never trains."""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

from block_recurrent_transformer_pytorch import BlockRecurrentConfig, BlockRecurrentTransformer, RecurrentTrainerWrapper
from block_recurrent_transformer_pytorch.pretrained import PretrainedError, load_weights, read_config

from .config import PRESETS, TrainConfig, TrainError

FINAL = "final"  # out_dir/final/: the finished run's weights, by save_pretrained


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
            knn_retrieval=cfg.knn_retrieval, knn_route_groups=cfg.knn_route_groups,
            embedding_init_std=cfg.embedding_init_std, rotary_dim=cfg.rotary_dim,
            memory_kv_from_inputs=cfg.memory_kv_from_inputs, xl_memory_blocks=cfg.xl_memory_blocks,
            token_shift=cfg.token_shift, value_residual=cfg.value_residual, unet_skips=cfg.unet_skips,
            embedding_mixing=cfg.embedding_mixing, attention_gate=cfg.attention_gate, logit_softcap=cfg.logit_softcap,
            activation_checkpointing=cfg.activation_checkpointing,
        )
    except (TypeError, ValueError) as error:
        hint = ""
        if cfg.preset:  # the user may not have passed the flag at fault: say where it came from
            model_fields = {f.name for f in fields(BlockRecurrentConfig)}
            preset_flags = ", ".join(("--" if v else "--no-") + k.replace("_", "-") if isinstance(v, bool)
                                     else f"--{k.replace('_', '-')} {v}"
                                     for k, v in PRESETS[cfg.preset].items() if k in model_fields)
            hint = f" (--preset {cfg.preset} sets {preset_flags}; a flag passed overrides it)"
        raise TrainError(f"invalid model flags: {error}{hint}") from None


def complete_model_config(saved: dict[str, Any]) -> dict[str, Any]:
    """A model config saved by an earlier version (a checkpoint's, a config.json), with the fields
    added since at their defaults: what a model built from it now has, to compare with."""
    try:
        return BlockRecurrentConfig(**saved).to_dict()
    except (TypeError, ValueError) as error:
        raise TrainError(f"the saved model config cannot be read by this version: {error}") from None


def pretrained_flags(passed: dict[str, Any]) -> dict[str, Any]:
    """The flags passed, with the model flags of --init-from's config.json added; one passed with
    another value than the saved model's is refused."""
    directory = passed["init_from"]
    try:
        saved = complete_model_config(read_config(directory))
    except PretrainedError as error:
        raise TrainError(f"--init-from: {error}") from None
    names = {f.name for f in fields(TrainConfig)}
    model_flags = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in names}
    differ = [f"--{k.replace('_', '-')} {passed[k]} (saved: {v})" for k, v in model_flags.items()
              if k in passed and passed[k] != v]
    if differ:
        raise TrainError(f"--init-from {directory}: model flags differ from its {Path(directory) / 'config.json'}: "
                         f"{'; '.join(differ)}; leave them out to take the saved model's")
    return {**passed, **model_flags}


def load_initial_weights(model: BlockRecurrentTransformer, directory: str) -> None:
    """--init-from: the weights save_pretrained wrote in directory, into model, whose config must be theirs."""
    try:
        saved = complete_model_config(read_config(directory))
        if saved != model.config.to_dict():
            changed = sorted(k for k, v in model.config.to_dict().items() if saved.get(k) != v)
            raise TrainError(f"--init-from {directory}: the model's {changed} differ from its config.json "
                             f"(fields train.py has no flag for cannot be changed)")
        load_weights(model, directory)
    except (PretrainedError, ImportError) as error:
        raise TrainError(f"--init-from: {error}") from None


def save_final(model: BlockRecurrentTransformer, out_dir: Path) -> None:
    """The finished run's weights as out_dir/final/ (model.safetensors + config.json); without
    safetensors installed, a warning instead."""
    try:
        model.save_pretrained(out_dir / FINAL)
    except ImportError as error:
        print(f"warning: {out_dir / FINAL} not written: {error}", file=sys.stderr)


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
    --fsdp keeps the eager loop, uncompiled (TrainConfig refuses --cuda-graph and --compile with it).
    The note, where there is one, is a single line saying which faster path is not used and why.
    """
    cuda = device.type == "cuda"
    blockers = []
    if cfg.bptt_segments != 1:
        blockers.append(f"--bptt-segments 1 (got {cfg.bptt_segments}: TrainStep backpropagates one segment at a time)")
    if cfg.knn_layers:
        blockers.append(f"no kNN layers (got --knn-layers {' '.join(map(str, cfg.knn_layers))}: "
                        f"TrainStep does not carry their store)")
    if cfg.fsdp:
        blockers.append("no --fsdp (a CUDA graph cannot hold FSDP's all-gathers)")
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


def autocast(cfg: TrainConfig, device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA (no loss scaling needed, unlike fp16); full precision elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda")


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
