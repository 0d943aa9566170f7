"""Train a Block-Recurrent Transformer on enwik8 (or any file of bytes) and report bits per character.

    python train.py                          # enwik8 with the seed's setup, on one GPU (or, slowly, CPU)
    python train.py --no-cuda-graph --no-compile   # a GPU's eager loop (the default there: TrainStep + compile)
    torchrun --nproc_per_node 8 train.py     # the same on 8 GPUs: the global batch grows 8x
    python train.py --resume                 # continue runs/enwik8/ckpt.pt exactly where it stopped
    python train.py --eval-only              # full validation and test bpc of runs/enwik8/ckpt.pt
    torchrun --nproc_per_node 8 train.py --fsdp --activation-checkpointing   # a model too large for one GPU
    python train.py --help                   # every hyperparameter has a flag

enwik8 is read from data/enwik8, data/enwik8.zip or data/enwik8.gz and downloaded from the Hutter
prize page when none of them is there (data/README.md). The standard split is used: the first 90M
bytes train, the next 5M validate, the last 5M test. Results are bits per character (bpc): the
mean next-byte cross-entropy in nats divided by ln 2, over every byte of a split.

The default schedule (linear warmup over 1,000 steps to a peak rate of 1e-4, cosine decay to 1e-5 at
--max-steps 100,000) is for the full enwik8 run: a run of a few hundred steps or fewer barely leaves
the warmup and learns almost nothing. Scale it with the run: for short runs raise --learning-rate
(e.g. 1e-3 for a small model, 6e-4 for the default one) and lower --warmup-steps to a few percent of
--max-steps (e.g. --max-steps 300 --warmup-steps 30). --schedule wsd holds the peak and decays linearly
over the last --decay-frac of the steps instead of the cosine.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Callable, Optional, Union, get_args, get_origin, get_type_hints

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from block_recurrent_transformer_pytorch import BlockRecurrentTransformer, RecurrentTrainerWrapper, TrainStep
from block_recurrent_transformer_pytorch.config import MIXING_OPTIONS
# train.py's parts (training/), importable from here as before: train.TrainConfig, train.evaluate, ...
from training.checkpoints import (CHECKPOINT, METRICS, PLOT, RunLog, load_checkpoint, read_records,  # noqa: F401
                                  rng_state, save_checkpoint, seed_rngs, set_rng_state, write_atomically)
from training.config import (ENWIK8_BYTES, ENWIK8_URL, FORMER_DEFAULTS, INVOCATION_FLAGS, PRESETS,  # noqa: F401
                             TrainConfig, TrainError, run_config)
from training.data import (check_same_data, data_fingerprint, document_separator, download_enwik8,  # noqa: F401
                           get_batch, load_enwik8, load_splits, read_bytes, split_bytes)
from training.distributed import (DistEnv, Interrupted, StopSignals, average_gradients, copy_full_weights,  # noqa: F401
                                  gathered, load_optimizer_state, setup_distributed, shard_model, whole_tensor)
from training.documents import DocumentRows
from training.evaluation import (decode_bytes, document_offsets, estimate_loss, evaluate,  # noqa: F401
                                 evaluate_split, final_evaluation, sample)
from training.model import (FastPath, autocast, build_model, complete_model_config, fast_path,  # noqa: F401
                            load_initial_weights, params_without_gradient, pretrained_flags, save_final, warn_untrained)
from training.optimizer import BatchedMuon, MuonAdamW, build_optimizer, hidden_matrices, lr_factor  # noqa: F401
from training.tokens import bits_per_byte, decoder


# ---- command line ------------------------------------------------------------------------------


def none_or(kind: type) -> Callable[[str], Any]:
    """The argparse type of an Optional[int] or Optional[float] flag: "none" gives None, the field's
    default meaning, so that a flag a preset sets (e.g. --logit-softcap) can be taken back."""
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)
    parse.__name__ = kind.__name__  # argparse's error names it: "invalid float value: 'x'"
    return parse


def parse_args(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """The flags given on the command line (only those: resume needs to know what was passed)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     argument_default=argparse.SUPPRESS)
    hints = get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        kind, flag = hints[f.name], "--" + f.name.replace("_", "-")
        optional = get_origin(kind) is Union  # Optional[X]
        if optional:
            kind = next(a for a in get_args(kind) if a is not type(None))
        text = f.metadata["help"] if f.default is None else f"{f.metadata['help']} (default: {f.default})"
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=text)
        elif get_origin(kind) is tuple:
            parser.add_argument(flag, type=int, nargs="*", metavar="LAYER", help=text)  # none: no such layer
        elif f.metadata["choices"]:
            parser.add_argument(flag, choices=f.metadata["choices"], help=text)
        elif optional and kind in (int, float):
            parser.add_argument(flag, type=none_or(kind), metavar=f.metadata["metavar"] or kind.__name__.upper(),
                                help=f"{text}; none: the default")
        else:
            parser.add_argument(flag, type=kind, metavar=f.metadata["metavar"] or kind.__name__.upper(), help=text)
    passed = vars(parser.parse_args(argv))
    return {k: tuple(v) if isinstance(v, list) else v for k, v in passed.items()}


def resolve_config(passed: dict[str, Any]) -> TrainConfig:
    """The run's config: the flags over the defaults, or, to resume or evaluate, over the checkpoint's config."""
    given = passed
    if passed.get("init_from") and not (passed.get("resume") or passed.get("eval_only")):
        passed = pretrained_flags(passed)  # a new run from saved weights: their model flags
    resuming = passed.get("resume") or passed.get("eval_only")
    if passed.get("preset") and not resuming:  # the preset's flags, under those passed (and a saved model's)
        passed = {**PRESETS[passed["preset"]], **passed}
    cfg = TrainConfig(**passed)
    if resuming:
        # the checkpoint's flags win unless passed again: `--resume` alone continues the same run. A
        # preset's do not: they were applied when the run began, under the flags passed then, which a
        # preset given again would otherwise silently undo (a run started with --batch-size 4 back at 16)
        saved = load_checkpoint(Path(cfg.out_dir) / CHECKPOINT, mmap=True)["train_config"]
        known = {f.name for f in fields(TrainConfig)}
        saved = {k: tuple(v) if isinstance(v, list) else v for k, v in {**FORMER_DEFAULTS, **saved}.items()
                 if k in known}
        saved.update(INVOCATION_FLAGS, out_dir=cfg.out_dir)
        cfg = replace(TrainConfig(**saved), **passed)
    # a --muon-lr given for a run that trains with AdamW would do nothing (a preset's --muon-lr is only a
    # default; a checkpoint's flags are judged when its optimizer state is restored). --[no-]muon-split-qkv is
    # not refused so: every run's config holds it (on by default), and the flags rebuilt from an AdamW run's
    # config.json must start that run again.
    if given.get("muon_lr") is not None and cfg.optimizer != "muon":
        raise TrainError(f"--muon-lr {given['muon_lr']} is Muon's rate, and this run's --optimizer is "
                         f"{cfg.optimizer}: pass --optimizer muon, or leave --muon-lr out")
    if cfg.scalar_lr is not None and not any(getattr(cfg, option) for option in MIXING_OPTIONS):
        flags = ", ".join("--" + option.replace("_", "-") for option in MIXING_OPTIONS)
        raise TrainError(f"--scalar-lr {cfg.scalar_lr} is the rate of the learned mixing weights of {flags}, and this "
                         f"run has none of them: pass one, or leave --scalar-lr out")
    return cfg


# ---- training ------------------------------------------------------------------------------------


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
    if ckpt is not None:
        _check_same_optimizer(cfg, ckpt)
    if ckpt is not None and not cfg.eval_only:
        check_steps_left(ckpt["step"], cfg)
    if ckpt is None and ckpt_path.exists():
        raise TrainError(f"{ckpt_path} exists: pass --resume to continue that run, or choose another --out-dir")
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 for the matmuls autocast leaves in fp32

    name, splits, fingerprint = _load_data(cfg, env, ckpt)
    train_data, val_data, test_data = splits
    model = _load_model(cfg, device, ckpt)
    trainer = _trainer(model, cfg)
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(out_dir, is_main, until_step=None if ckpt is None else ckpt["step"])
    fast = fast_path(cfg, device)
    if is_main:
        _describe(cfg, env, model, name, splits, fast)

    separator = document_separator(cfg)
    if cfg.eval_only:
        final_evaluation(model, val_data, test_data, cfg, ckpt["step"], log, separator)
        return model

    # before compiling: a dry pass over the first sample finds the parameters a step may leave without a gradient
    first = train_data[None, :cfg.seq_len + 1].long().to(device)
    if is_main:
        warn_untrained(params_without_gradient(model, cfg, first, worst_case=False), cfg)
    may_lack_gradients = distributed and not fast.cuda_graph and bool(
        params_without_gradient(model, cfg, first, worst_case=True))

    # --fsdp: the weights become shards, which evaluation (uneven over the ranks) and sampling (rank 0
    # alone, through a CUDA graph) could not all-gather. They read a whole copy on every rank instead
    # (4 bytes per parameter), refreshed from the shards when they run: full_model(), every rank together.
    sharded = cfg.fsdp and distributed
    whole = copy.deepcopy(model) if sharded else model
    if sharded:
        shard_model(model)
    eval_trainer = _trainer(whole, cfg) if sharded else trainer

    def full_model() -> BlockRecurrentTransformer:
        """The model with its current weights whole on this rank (sharded: every rank calls it together)."""
        if sharded:
            copy_full_weights(model, whole)
        return whole

    optimizer = build_optimizer(model, cfg, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    data_generator = torch.Generator()
    step, window = _restore_progress(cfg, env, ckpt, ckpt_path, optimizer, scheduler, data_generator)
    # --documents: each row reads whole documents, its memories and states carried across steps
    documents = DocumentRows(train_data, separator, cfg.batch_size, cfg.max_seq_len, cfg.seq_len // cfg.max_seq_len,
                             cfg.grad_accum, model.config.ignore_index, cfg.seed, env.rank,
                             env.world_size) if cfg.documents else None
    if documents is not None and ckpt is not None:
        _restore_documents(documents, ckpt, env, device)
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
    # FSDP reduce-scatters the gradients itself, in each backward.
    use_ddp = distributed and not (fast.cuda_graph or sharded)
    ddp = DistributedDataParallel(trainer, device_ids=[env.local_rank] if device.type == "cuda" else None,
                                  find_unused_parameters=may_lack_gradients) if use_ddp else None
    forward = ddp if ddp is not None else trainer
    amp_dtype = torch.bfloat16 if cfg.amp and device.type == "cuda" else None
    train_step = TrainStep(trainer, cuda_graph=device.type == "cuda", amp_dtype=amp_dtype) if fast.cuda_graph else None
    # The first step compiles and captures graphs: say so, so that a silent minute is not taken for a hang.
    warming = fast.compile or (fast.cuda_graph and device.type == "cuda")
    if warming and is_main:
        print("compiling the training step, once (about a minute at the default size; minutes for a "
              "billion parameters)..." if fast.compile else
              "capturing the training step's CUDA graphs (a few seconds, once)...", flush=True)

    def checkpoint(window: dict[str, Any]) -> None:
        """Save the run; window: this rank's unfinished train-loss record, so a resume logs what this run would."""
        states = [None] * env.world_size
        mine = (rng_state(data_generator), window, None if documents is None else documents.state_dict())
        if distributed:
            dist.all_gather_object(states, mine)
        else:
            states[0] = mine
        # whole tensors, as one process saves them: --fsdp's shards are gathered (every rank), to rank 0's CPU
        weights, optimizer_state = gathered(model.state_dict(), is_main), gathered(optimizer.state_dict(), is_main)
        finished = full_model() if step == cfg.max_steps else None
        if is_main:
            save_checkpoint({"model": weights, "optimizer": optimizer_state,
                             "scheduler": scheduler.state_dict(), "step": step, "rng": [r for r, _, _ in states],
                             "window": [w for _, w, _ in states], "documents": [d for _, _, d in states],
                             "world_size": env.world_size, "model_config": model.config.to_dict(),
                             "train_config": run_config(cfg), "data": fingerprint}, ckpt_path)
            if finished is not None:  # the finished weights, shareable: model.safetensors + config.json
                save_final(finished, out_dir)

    tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum * env.world_size
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not is_main, desc="train", dynamic_ncols=True)
    running_loss = torch.tensor(window["loss"], device=device)
    running_steps, clock = window["steps"], time.perf_counter() - window["seconds"]
    started = time.perf_counter()
    trainer.train()
    if train_step is not None and documents is not None:
        # Every graph now, in the first step's time: the one with old memory entries masked would
        # otherwise compile at the first step where a row starts a document, minutes into the run.
        train_step.warm_up(cfg.batch_size, documents=True)
    stop.armed = True
    while step < cfg.max_steps:
        for micro in range(cfg.grad_accum):
            if documents is not None:
                running_loss += _documents_micro_step(documents, micro, cfg, train_step, forward, ddp, device) \
                    / cfg.grad_accum
                continue
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
            bpc = bits_per_byte(loss_nats, train_data)  # bits per byte of text: bytes' bpc, comparable across vocabularies
            bar.set_postfix(loss=f"{loss_nats:.4f}", bpc=f"{bpc:.4f}", tok_s=f"{speed:,.0f}", refresh=False)
            # Muon's group is the last (MuonAdamW's groups: AdamW's, then Muon's); --scalar-lr's is AdamW's third
            rates = scheduler.get_last_lr()
            own_rates = {"lr_muon": rates[-1]} if cfg.optimizer == "muon" else {}
            if cfg.scalar_lr is not None:
                own_rates["lr_scalar"] = rates[2]
            log.log(step=step, kind="train", loss=loss_nats, bpc=bpc, lr=rates[0], **own_rates,
                    grad_norm=grad_norm.item(), tokens_per_s=speed, tokens=step * tokens_per_step)
            running_loss.zero_()
            running_steps, clock = 0, time.perf_counter()

        paused = time.perf_counter()
        _evaluate_and_sample(cfg, step, eval_trainer, full_model, val_data, device, log, bar, is_main)
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
            return full_model()
    stop.armed = False  # a signal during the final evaluation exits at once: the checkpoint is written
    bar.close()
    final_evaluation(full_model(), val_data, test_data, cfg, step, log, separator)
    return whole


def _trainer(model: BlockRecurrentTransformer, cfg: TrainConfig) -> RecurrentTrainerWrapper:
    """The wrapper that computes the training loss of model (its segments, memory and state dropout)."""
    return RecurrentTrainerWrapper(model, cfg.xl_memories_dropout, cfg.state_dropout, bptt_segments=cfg.bptt_segments)


def _documents_micro_step(documents: DocumentRows, micro: int, cfg: TrainConfig, train_step: Optional[TrainStep],
                          forward: torch.nn.Module, ddp: Optional[DistributedDataParallel],
                          device: torch.device) -> torch.Tensor:
    """One micro-batch of --documents training: the rows' next segments, from the memories and states
    they ended the last step with; accumulates loss / grad_accum's gradient, returns the loss."""
    batch, memories, states = documents.next(micro)
    if train_step is not None:
        # TrainStep copies pinned CPU tensors without a host sync, and reads the resets on the host
        inputs, labels = (t.pin_memory() if device.type == "cuda" else t for t in (batch.inputs, batch.labels))
        loss, memories, states = train_step(inputs, 1 / cfg.grad_accum, labels=labels, reset=batch.reset,
                                            xl_memories=memories, states=states, return_memories_and_states=True)
    else:
        sync = ddp is None or micro == cfg.grad_accum - 1  # as the windows' loop: one all-reduce per step
        with nullcontext() if sync else ddp.no_sync():
            with autocast(cfg, device):
                loss, memories, states = forward(batch.inputs.to(device), True, labels=batch.labels.to(device),
                                                 reset=batch.reset.to(device), xl_memories=memories, states=states)
            (loss / cfg.grad_accum).backward()
    documents.carry(micro, memories, states)
    return loss.detach()


def _load_data(cfg: TrainConfig, env: DistEnv, ckpt: Optional[dict]) -> tuple[str, tuple, dict[str, int]]:
    """The corpus' name, splits and fingerprint, checked against the checkpoint's unless --allow-data-change."""
    distributed = env.world_size > 1
    # one process per node fetches enwik8 while the others wait, then all read it
    if distributed and env.local_rank != 0:
        dist.barrier()
    name, splits = load_splits(cfg)
    if distributed and env.local_rank == 0:
        dist.barrier()
    fingerprint = data_fingerprint(splits)
    if ckpt is not None and not cfg.allow_data_change:
        check_same_data(ckpt.get("data"), fingerprint, name)
    return name, splits, fingerprint


def _load_model(cfg: TrainConfig, device: torch.device, ckpt: Optional[dict]) -> BlockRecurrentTransformer:
    """The model on device: freshly initialised (the same weights on every rank), or the checkpoint's."""
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = build_model(cfg).to(device)
    if ckpt is not None:
        saved = complete_model_config(ckpt["model_config"])
        if saved != model.config.to_dict():
            changed = sorted(k for k, v in model.config.to_dict().items() if saved[k] != v)
            raise TrainError(f"the model flags {changed} differ from the checkpoint's model; they cannot change")
        model.load_state_dict(ckpt["model"])
    elif cfg.init_from is not None:  # a new run from save_pretrained's weights
        load_initial_weights(model, cfg.init_from)
    return model


def _describe(cfg: TrainConfig, env: DistEnv, model: BlockRecurrentTransformer, name: str, splits: tuple,
              fast: FastPath) -> None:
    """The run's model, data, batch and device, printed before it starts."""
    device, (train_data, val_data, test_data) = env.device, splits
    n_params = sum(p.numel() for p in model.parameters())
    tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum * env.world_size
    print(f"model: {n_params / 1e6:.2f}M parameters, {cfg.depth} layers x {cfg.dim}, "
          f"recurrent layers {model.config.recurrent_layers} with {cfg.num_state_vectors} state vectors")
    print(f"data: {name}: train {len(train_data):,} / val {len(val_data):,} / test {len(test_data):,} "
          f"{'bytes' if cfg.data_tokens is None else 'tokens'}")
    print(f"batch: {cfg.batch_size} x {cfg.seq_len} tokens x {cfg.grad_accum} accumulation x "
          f"{env.world_size} process(es) = {tokens_per_step:,} tokens per step")
    graphs = " (CUDA graphs)" if device.type == "cuda" else " (eager)"
    sharded = f", FSDP: sharded over {env.world_size} processes" if cfg.fsdp and env.world_size > 1 else ""
    print(f"device: {device}{', bf16 autocast' if cfg.amp and device.type == 'cuda' else ''}"
          f"{', TrainStep' + graphs if fast.cuda_graph else ''}{', compiled' if fast.compile else ''}{sharded}; "
          f"output: {Path(cfg.out_dir)}")
    if fast.note and not cfg.eval_only:
        print(fast.note)
    if cfg.fsdp and env.world_size == 1 and not cfg.eval_only:
        print("note: --fsdp with one process: nothing to shard, the model trains whole (on the eager loop)")


def _check_same_optimizer(cfg: TrainConfig, ckpt: dict) -> None:
    """The optimizer, its peak rates, the schedule's curve and Muon's matrices are the checkpoint's: its state
    and schedule hold them (a field the checkpoint lacks: FORMER_DEFAULTS'), and a curve changed mid-run would
    move the rate at once. How Muon splits its matrices is compared for a Muon run only, wsd's decay share for
    a wsd run only. Checked before anything is built, so that a changed flag gets this reason and no other."""
    trained_with = {**FORMER_DEFAULTS, **ckpt["train_config"]}
    names = ("optimizer", "learning_rate", "muon_lr", "schedule", "scalar_lr")
    names += ("muon_split_qkv",) if cfg.optimizer == "muon" else ()
    names += ("decay_frac",) if cfg.schedule == "wsd" else ()
    for name in names:
        saved = trained_with[name]
        if getattr(cfg, name) != saved:
            given, trained = _as_flag(name, getattr(cfg, name)), _as_flag(name, saved)
            raise TrainError(f"{given}: the checkpoint's run trained with {trained}, which its optimizer state and "
                             f"schedule hold; resume without {given.split()[0]}, or start a new run")


def _as_flag(name: str, value: Any) -> str:
    """A config field's value as the flag that sets it: --muon-lr 0.003, --muon-split-qkv, --no-muon-split-qkv,
    --scalar-lr none (an optional number's flag takes none for its default)."""
    flag = name.replace("_", "-")
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    return f"--{flag} {'none' if value is None else value}"


def _restore_progress(cfg: TrainConfig, env: DistEnv, ckpt: Optional[dict], ckpt_path: Path,
                      optimizer: torch.optim.Optimizer, scheduler: Any,
                      data_generator: torch.Generator) -> tuple[int, dict[str, Any]]:
    """The step to start from and the unfinished train-loss record (summed loss in nats, steps and seconds
    since the last record): the checkpoint's, with the optimizer, schedule and random streams, or a fresh start."""
    step, window = 0, {"loss": 0.0, "steps": 0, "seconds": 0.0}
    if ckpt is None:
        seed_rngs(cfg.seed + env.rank, data_generator)  # different batches and dropout on every rank
        return step, window
    load_optimizer_state(optimizer, ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    step = ckpt["step"]
    if ckpt["world_size"] == env.world_size:
        set_rng_state(ckpt["rng"][env.rank], data_generator)
        window = ckpt.get("window", [window] * env.world_size)[env.rank]  # older checkpoints kept none
    else:  # a different number of processes cannot replay the same batches; continue on fresh seeds
        seed_rngs(cfg.seed + env.rank + 7919 * step, data_generator)
        if env.is_main:
            print(f"note: checkpoint from {ckpt['world_size']} processes, resumed on {env.world_size}: "
                  f"the data order differs from an uninterrupted run")
    if env.is_main:
        done = " = --max-steps: nothing left to train, evaluating it again" if step == cfg.max_steps else ""
        print(f"resumed from {ckpt_path} at step {step}{done}")
    return step, window


def _restore_documents(documents: DocumentRows, ckpt: dict, env: DistEnv, device: torch.device) -> None:
    """--documents on resume: each row continues its document with the memories and states it
    carried, as the checkpoint kept them; a fresh start of every row (said) where it cannot."""
    saved = ckpt.get("documents", [None] * ckpt["world_size"])  # older checkpoints kept none
    why = None
    if ckpt["world_size"] != env.world_size:
        why = f"it was written by {ckpt['world_size']} processes, not {env.world_size}"
    elif saved[env.rank] is None:
        why = "its run did not read documents (no --documents)"
    else:
        try:
            documents.load_state_dict(saved[env.rank], device)
        except ValueError as error:  # another --batch-size or --grad-accum
            why = str(error)
    if why is not None and env.is_main:
        print(f"note: every row starts a new document: the checkpoint's rows cannot continue ({why})")


def _evaluate_and_sample(cfg: TrainConfig, step: int, trainer: RecurrentTrainerWrapper,
                         full_model: Callable[[], BlockRecurrentTransformer], val_data: torch.Tensor,
                         device: torch.device, log: RunLog, bar: tqdm, is_main: bool) -> None:
    """The periodic validation estimate (every rank) and sample (rank 0), when this step is due for them.
    trainer wraps the model full_model() returns (called on every rank when either is due)."""
    evaluate_now = cfg.eval_interval and step % cfg.eval_interval == 0
    sample_now = cfg.sample_interval and step % cfg.sample_interval == 0
    if not (evaluate_now or sample_now):
        return
    model = full_model()
    if evaluate_now:
        val_loss = estimate_loss(trainer, val_data, cfg, device)
        if is_main:
            bar.write(f"step {step}: val loss {val_loss:.4f} nats, {bits_per_byte(val_loss, val_data):.4f} bpc")
        log.log(step=step, kind="val", loss=val_loss, bpc=bits_per_byte(val_loss, val_data))
        log.plot()
    if sample_now and is_main:
        start = random.Random(cfg.seed + step).randrange(max(len(val_data) - cfg.prime_length, 0) + 1)
        prime = val_data[start:start + cfg.prime_length]
        # a token directory's text is decoded through its tokenizer
        decode = decode_bytes if cfg.data_tokens is None else decoder(Path(cfg.data_tokens))
        text, prime_text = sample(model, prime, cfg, seed=cfg.seed + step, decode=decode), decode(prime.tolist())
        bar.write(f"--- sample at step {step} ---\n{prime_text}\n--- continued by the model ---\n{text}\n---")


def check_steps_left(step: int, cfg: TrainConfig) -> None:
    """A resumed run must end at or after its checkpoint's step: a clear error, not a run that trains nothing."""
    if cfg.max_steps < step:
        raise TrainError(f"--max-steps {cfg.max_steps} is below the checkpoint's step {step}: pass --max-steps {step} "
                         f"or more to resume (--eval-only evaluates the checkpoint)")
    if cfg.stop_at_step is not None and cfg.stop_at_step <= step:
        raise TrainError(f"--stop-at-step {cfg.stop_at_step} is not after the checkpoint's step {step}")


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
