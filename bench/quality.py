"""Long-document quality: ours vs x-transformers' Transformer-XL at equal tokens or equal time (issue 15).

One run trains one model (--model) from scratch on a corpus of bench/corpora.py for --tokens tokens
or --seconds of training (compilation and CUDA-graph capture excluded: the first --untimed-steps
steps are trained but timed apart, as warmup_s), then evaluates held-out documents and writes JSONL:

  {"kind": "config", ...}   the model's parameters (count and settings), the run's flags
  {"kind": "train", ...}    every --log-every steps: mean train loss (nats and bits/byte), lr, tokens, tokens/s;
                            for ours with a state, its weights' diagnostics (state_reads_weight, gate_retention)
  {"kind": "grow", ...}     with --grow-at: the step, rows and segment of the switch, and its untimed seconds
  {"kind": "resume", ...}   with --checkpoint, where a call continues a run: its steps so far and how many calls
                            came before
  {"kind": "checkpoint", ...}  with --checkpoint, where --stop-after or --stop-at-step stopped the call: the run's
                            step, tokens and clock so far, saved to continue (no evaluation; the call that ends the
                            run writes the result, its calls, train_s and tokens/s counting every call)
  {"kind": "result", ...}   steps, tokens, tokens/s, warmup_s, train_s, compile_cache (what --compile-cache did:
                            loaded, saved or nothing compiled), and the evaluation: bits/byte over
                            all held-out bytes and by byte offset within the document (0-1k, 1k-4k,
                            4k-16k, 16k-64k, 64k+) and per held-out document (by_document); for ours
                            also with the states reset every segment ("nostate_eval": what the
                            recurrent state contributes)

Models:
  ours          BlockRecurrentTransformer (--preset seed|large|tiny|long-documents, any field with --set k=v, e.g.
                --set kv_heads=8 --set recurrent_layers=4,), trained through TrainStep (CUDA graphs) on a
                model.compile()d model with bf16 autocast and fused AdamW on CUDA; eagerly on CPU. With kNN
                layers (--set knn_layers=5, --set knn_memory_size=65536), which TrainStep does not carry:
                through RecurrentTrainerWrapper, eagerly, the store carried with the memories and reset
                per row where its next document starts
  ours_nostate  the same with recurrent_layers=() (no state; XL memories only; note that this also
                takes the recurrent layer's qk-rmsnorm away, recurrent layers always having it)
  ours_unread   ours with its state reads held at zero weight (cut_state_reads): the states are
                computed and never used, every other weight is ours' at the same seed, and the
                recurrent layer keeps its qk-rmsnorm, so that ours and ours_unread differ by what
                the state carries alone
  xl            x-transformers' TransformerWrapper + Decoder with Transformer-XL memories (max_mem_len =
                --mem, mems carried with return_mems=True / mems=), flash attention, rotary positions,
                the same dim/depth/heads/dim_head/kv_heads as ours and ours' feed-forward kind and width
                (GEGLU: ff_glu, ff_mult = 4 * 2/3; ff_no_bias, which leaves a bias on x-transformers' GLU input
                projection alone; --xl-match-params widens it to ours' parameter count);
                segment length --seg; torch.compile'd on CUDA except segments without memories (eager:
                compiled, their flash-attention backward fails inductor's stride check in torch 2.11)

Training data (the same for every model): train.py's --documents reader (training/documents.py):
each of the --batch rows reads whole documents of the train split, in a random order (each once per
epoch), from their start, segment by segment (ours: max_seq_len; xl: --seg; a document's last segment is padded and
its padding not scored); each step takes the next --seq tokens of every row. Memories (and states)
are carried from segment to segment and from step to step, detached (truncated backprop through
time, one segment); where a row's next document starts, ours resets that row's memories and states,
and the XL masks that row's memories (x-transformers' mem_masks; before 2026-11-30's fourth session
they carried over); --mem-dropout / --state-dropout 0.1 as train.py. AdamW
(betas 0.9/0.95, weight decay 0.1 on linear and embedding weights), --lr with --warmup linear steps
then cosine to lr * --min-lr-ratio (default 0.1: lr/10) (over the token or time budget), or held and then decayed
linearly to it over the last --decay-frac of the budget (--schedule wsd), or constant, gradient clipping --clip.
With --optimizer muon, Muon (train.py's BatchedMuon: torch.optim.Muon's update batched by shape; the
twenty-first session's runs used torch.optim.Muon itself; momentum 0.95, Nesterov, update RMS matched to AdamW's:
adjust_lr_fn="match_rms_adamw", weight decay --weight-decay) trains the hidden layers' matrices (every
nn.Linear weight but the output head's) at peak rate --muon-lr on the same schedule, and AdamW the rest;
--muon-split-qkv gives ours' fused query/key/value projections one orthogonalised update per map, as the XL's
separate ones get (train.py's default with Muon since the twenty-third session; off here unless given, so that every
recorded command reproduces as run). --scalar-lr gives ours' learned mixing weights (value_residual's, unet_skips',
embedding_mixing's) an AdamW rate of their own, as train.py's flag of that name.

Evaluation (eager, not compiled; bf16 autocast on CUDA): the first held-out documents (in their
order in the test split, empty ones left out) up to --eval-bytes, each as one row read from its start with fresh memories
and states: the input is the separator byte followed by the document, every byte of the document is
predicted once. Rows are batched by length (longest first), padded to whole segments and masked.
bits/byte = mean next-byte loss (nats) / ln 2.

    python bench/quality.py --model ours --corpus linux_c --tokens 100e6 --out bench_out/q_ours.jsonl
    python bench/quality.py --model xl --seg 1024 --mem 1024 --seconds 300 --out bench_out/q_xl.jsonl
    PYTHONPATH=/tmp/xt:$PWD python bench/quality.py --tiny --model xl     # CPU smoke test

A run longer than one call (a device call lasts at most 10 minutes): give every call the same flags and
--checkpoint FILE on a disk that outlives the call; each call stops at --stop-after, saves the run there and
exits, and the call that reaches --tokens evaluates it. The resumed run trains as the one-call run (bit for bit
on a CPU: tests/test_quality_bench.py; on a GPU up to its kernels' own nondeterminism); only its clock differs,
each call compiling afresh in its own untimed steps.

    python bench/quality.py --model xl --tokens 400e6 --stop-after 540 --checkpoint /tmp/xl.pt ...  # until it ends
"""

from __future__ import annotations

import gc
import math
import os
import random
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import corpora  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from block_recurrent_transformer_pytorch.config import (  # noqa: E402
    MIXING_OPTIONS, BlockRecurrentConfig, feedforward_width)
from training.checkpoints import load_checkpoint, rng_state, save_checkpoint, set_rng_state  # noqa: E402
from training.config import PRESETS as TRAIN_PRESETS, SCHEDULES  # noqa: E402
from training.documents import DocumentBatch, DocumentStreams  # noqa: E402  (train.py's --documents reader)
from training.optimizer import decay_factor, make_muon, output_splits, param_groups  # noqa: E402  (train.py's optimizers)

IGNORE = -100  # labels of padding (the models' ignore_index)
MODEL_FIELDS = {f.name for f in fields(BlockRecurrentConfig)}
PRESETS: dict[str, dict[str, Any]] = {
    "seed": common.SEED_CONFIG, "large": common.LARGE_CONFIG, "tiny": common.TINY_CONFIG,
    # train.py's --preset long-documents model (its batch, schedule and optimizer are flags here: --batch 32 --seq 2048
    # --warmup 50 --optimizer muon --muon-lr 3e-3 --muon-split-qkv). Since the twenty-seventh session it has
    # value_residual and unet_skips, since the twenty-ninth logit_softcap=15, since the thirty-first
    # all_layers_qk_rmsnorm: a command recorded before then runs its model again as a new run with --set
    # value_residual=false --set unet_skips=false --set logit_softcap=none --set all_layers_qk_rmsnorm=false (only those
    # the preset had not yet at its session; a --checkpoint saved before then cannot be continued: its flags or model
    # would differ); each run's config record lists its model's fields
    "long-documents": {**common.SEED_CONFIG, **{k: v for k, v in TRAIN_PRESETS["long-documents"].items()
                                                if k in MODEL_FIELDS}},
}
BUCKETS = corpora.BUCKETS
LN2 = math.log(2)


# ---- command line ------------------------------------------------------------------------------

def parse_args(argv: Optional[list[str]] = None):
    parser = common.base_parser(__doc__)
    parser.add_argument("--model", choices=("ours", "ours_nostate", "ours_unread", "xl"), default="ours")
    parser.add_argument("--corpus", default="linux_c", help="a corpus of bench/corpora.py (linux_c, python_stdlib, "
                                                            "text_docs)")
    parser.add_argument("--corpora", default=None, help="where the corpora are (default: .corpora/ in the repository, "
                                                        "else /work/main/.corpora); raw .bin, else xz/*.bin.xz")
    parser.add_argument("--tokens", type=float, default=None, help="train on this many tokens (e.g. 100e6)")
    parser.add_argument("--seconds", type=float, default=None, help="or train this long (after the untimed steps)")
    parser.add_argument("--stop-after", type=float, default=None, metavar="SECONDS",
                        help="stop training this long after the start (warm-up included) even if the budget is not "
                             "spent, and evaluate what was trained; its result says cut: true. Keeps a run that "
                             "would outlast its time limit from ending with no evaluation at all")
    parser.add_argument("--stop-at-step", type=int, default=None, metavar="STEP",
                        help="stop training after this step even if the budget is not spent (as --stop-after)")
    parser.add_argument("--checkpoint", default=None, metavar="FILE",
                        help="--tokens runs longer than one call: continue from FILE where it exists (the same flags "
                             "but those of one call: --out, --impl, --stop-after, --stop-at-step, --untimed-steps, "
                             "--compile-cache, --device, --corpora), and where --stop-after or --stop-at-step stops "
                             "training, write the run there (atomically) instead of evaluating it: a run resumed "
                             "this way trains and scores as one that never stopped")
    parser.add_argument("--untimed-steps", type=int, default=2,
                        help="first steps (compilation, graph capture) trained but timed apart; with xl and --mem "
                             "longer than --seg its memories grow over the first steps and each new length "
                             "compiles a graph, so give it steps enough to fill them (quality_table.py's start+s "
                             "shows what the clock counted)")
    parser.add_argument("--preset", choices=tuple(PRESETS), default="seed",
                        help="ours' configuration; xl takes its sizes and key/value heads from it (and with "
                             "--xl-match-params its parameter count): give ours and xl the same preset")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a BlockRecurrentTransformer field, e.g. kv_heads=8, recurrent_layers=4,")
    parser.add_argument("--emb-std", type=float, default=None,
                        help="ours: initialise the token embeddings from N(0, std^2) (default: the model's, N(0, 1))")
    parser.add_argument("--seg", type=int, default=512, help="xl: segment length")
    parser.add_argument("--mem", type=int, default=512, help="xl: memory length (max_mem_len)")
    parser.add_argument("--xl-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override an x-transformers Decoder keyword, e.g. attn_kv_heads=8, ff_glu=false")
    parser.add_argument("--xl-match-params", action="store_true",
                        help="xl: widen its feed-forward so its parameter count matches ours' (state layers included)")
    parser.add_argument("--batch", type=int, default=8, help="rows (each reads documents) per step")
    parser.add_argument("--seq", type=int, default=2048, help="tokens per row per step (a multiple of the segment)")
    parser.add_argument("--lr", type=float, default=6e-4)
    parser.add_argument("--warmup", type=int, default=200, help="linear warmup steps")
    parser.add_argument("--schedule", choices=SCHEDULES, default="cosine",
                        help="after the warmup: cosine to --min-lr-ratio; wsd (warmup-stable-decay): the peak rate "
                             "held, then a linear decay to --min-lr-ratio over the last --decay-frac of the budget; "
                             "or constant")
    parser.add_argument("--min-lr-ratio", type=float, default=0.1,
                        help="cosine and wsd: the rate they end at, as a share of --lr (0: decays to zero)")
    parser.add_argument("--decay-frac", type=float, default=0.4,
                        help="wsd: the share of the token or time budget its linear decay takes, in (0, 1]")
    parser.add_argument("--clip", type=float, default=0.5)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--optimizer", choices=("adamw", "muon"), default="adamw",
                        help="muon: Muon (train.py's) for the hidden layers' matrices (update RMS matched to AdamW's), "
                             "AdamW for embeddings, output head, norms and initial states")
    parser.add_argument("--muon-lr", type=float, default=None,
                        help="--optimizer muon: Muon's peak rate, on --lr's schedule (default: --lr)")
    parser.add_argument("--scalar-lr", type=float, default=None,
                        help="ours: AdamW's peak rate for the learned mixing weights (value_residual's, unet_skips', "
                             "embedding_mixing's), on --lr's schedule (default: --lr, with the other AdamW parameters)")
    parser.add_argument("--muon-split-qkv", action="store_true",
                        help="--optimizer muon, ours: orthogonalise the queries', keys' and values' rows of each fused "
                             "projection as matrices of their own (the XL's are separate linear layers already)")
    parser.add_argument("--mem-dropout", type=float, default=0.1, help="chance a segment starts without memories "
                                                                       "(ours and xl; train.py's default)")
    parser.add_argument("--state-dropout", type=float, default=0.1,
                        help="ours: chance a segment starts from the initial states (train.py's default); evaluation "
                             "starts every document from the initial states, which carried training never revisits "
                             "without it")
    parser.add_argument("--log-every", type=int, default=50, help="steps between train-loss records")
    parser.add_argument("--eval-bytes", type=float, default=2e6, help="held-out bytes evaluated (whole documents)")
    parser.add_argument("--eval-batch", type=int, default=16, help="documents per evaluation batch")
    parser.add_argument("--eval-max-doc", type=int, default=None, help="cut documents longer than this (bytes)")
    parser.add_argument("--no-nostate-eval", action="store_true", help="ours: skip the states-reset evaluation")
    parser.add_argument("--no-compile", action="store_true", help="do not torch.compile (CUDA)")
    parser.add_argument("--no-cuda-graph", action="store_true", help="ours: eager TrainStep (CUDA)")
    parser.add_argument("--compile-cache", default=None, metavar="FILE",
                        help="torch.compile's caches (torch.compiler.save_cache_artifacts): loaded from FILE before "
                             "training where it exists, else written there once the untimed steps have compiled "
                             "everything, so that a later run of the same model on the same torch and GPU compiles "
                             "in a fraction of the time (untimed either way); e.g. to fit two equal-time runs one "
                             "after the other in one call")
    parser.add_argument("--grow-at", type=int, default=None, metavar="STEP",
                        help="ours: from this step on, train on --grow-batch rows of segments of --grow-seq tokens "
                             "(a segment-length warmup: the early plateau passed on the short segments, the state "
                             "then trained through more blocks); memories and states start afresh there")
    parser.add_argument("--grow-batch", type=int, default=None, help="rows per step from --grow-at on")
    parser.add_argument("--grow-seq", type=int, default=None,
                        help="tokens per row per step from --grow-at on, one segment (ours' max_seq_len)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.tiny:
        args.preset = "tiny"
        for name, value in dict(batch=4, seq=128, seg=32, mem=32, eval_batch=4, log_every=2, warmup=5).items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
        if args.tokens is None and args.seconds is None:
            args.tokens = 4 * 128 * 12
        if args.eval_bytes == parser.get_default("eval_bytes"):
            args.eval_bytes = 24_000
        if args.eval_max_doc is None:
            args.eval_max_doc = 6000
    if (args.tokens is None) == (args.seconds is None):
        parser.error("give one of --tokens and --seconds")
    if not 0 <= args.min_lr_ratio <= 1:
        parser.error(f"--min-lr-ratio must lie in [0, 1] (a share of --lr), got {args.min_lr_ratio}")
    if not 0 < args.decay_frac <= 1:
        parser.error(f"--decay-frac must lie in (0, 1] (a share of the budget), got {args.decay_frac}")
    if args.optimizer == "muon":
        if not hasattr(torch.optim, "Muon"):
            parser.error(f"--optimizer muon needs torch.optim.Muon (torch 2.9 or later), this is torch {torch.__version__}")
        args.muon_lr = args.lr if args.muon_lr is None else args.muon_lr
        if args.muon_lr <= 0:
            parser.error(f"--muon-lr must be positive, got {args.muon_lr}")
    elif args.muon_lr is not None:
        parser.error(f"--muon-lr is Muon's rate: give it with --optimizer muon (got --optimizer {args.optimizer})")
    elif args.muon_split_qkv:
        parser.error(f"--muon-split-qkv is Muon's: give it with --optimizer muon (got --optimizer {args.optimizer})")
    if args.scalar_lr is not None:
        if not args.scalar_lr > 0:
            parser.error(f"--scalar-lr must be positive, got {args.scalar_lr}")
        if args.model == "xl" or not any(ours_config(args).get(name) for name in MIXING_OPTIONS):
            parser.error(f"--scalar-lr is the rate of ours' learned mixing weights ({', '.join(MIXING_OPTIONS)}), "
                         f"and this run's model has none (--model {args.model}, --preset {args.preset})")
    if args.muon_split_qkv and args.model == "xl":
        parser.error("--muon-split-qkv is for ours, ours_nostate and ours_unread: the XL's queries, keys and values "
                     "are separate linear layers already")
    if args.stop_at_step is not None and args.stop_at_step < 1:
        parser.error(f"--stop-at-step must be a step >= 1, got {args.stop_at_step}")
    if args.checkpoint is not None:
        if args.seconds is not None:
            parser.error("--checkpoint continues a --tokens run; a --seconds run's clock cannot span calls")
        if args.grow_at is not None:
            parser.error("--checkpoint and --grow-at do not go together: a grown model is not the one a resume builds")
        if ours_config(args).get("knn_layers") and args.model != "xl":
            parser.error("--checkpoint does not keep a kNN layer's store: train such a model in one call")
    grow = (args.grow_at, args.grow_batch, args.grow_seq)
    if any(v is not None for v in grow):
        if any(v is None for v in grow):
            parser.error(f"--grow-at, --grow-batch and --grow-seq go together, got {grow}")
        if args.model == "xl":
            parser.error("--grow-at grows ours' segment; the xl peer trains on one shape")
        if args.grow_at <= args.untimed_steps:
            parser.error(f"--grow-at must come after the --untimed-steps ({args.untimed_steps}), got {args.grow_at}")
        cfg = ours_config(args)
        segment = cfg.get("max_seq_len")
        if segment is not None and args.grow_seq <= segment:
            parser.error(f"--grow-seq must be longer than the model's segment (max_seq_len {segment}), got {args.grow_seq}")
        try:
            BlockRecurrentConfig(**{**cfg, "max_seq_len": args.grow_seq})
        except (TypeError, ValueError) as error:
            parser.error(f"--grow-seq {args.grow_seq} does not make a model of the config: {error}")
        if args.grow_batch * args.grow_seq != args.batch * args.seq:
            parser.error(f"--grow-batch x --grow-seq must keep the tokens per step (--batch x --seq = "
                         f"{args.batch * args.seq}), got {args.grow_batch} x {args.grow_seq}")
    return args


# ---- data -----------------------------------------------------------------------------------------

def load_corpus(args) -> tuple[str, Tensor, bytes]:
    """(description, train split as a uint8 tensor, test split bytes)."""
    if args.tiny and args.corpora is None:
        train, test = corpora.tiny_corpus(REPO)
        return "tiny (this repository's .py/.md files)", torch.frombuffer(bytearray(train), dtype=torch.uint8), test
    roots = [args.corpora] if args.corpora else [REPO / ".corpora", Path("/work/main/.corpora")]
    for root in roots:
        if corpora.split_path(root, args.corpus, "train") is not None:
            train = corpora.load_split(root, args.corpus, "train")
            return (f"{args.corpus} from {root}", torch.frombuffer(bytearray(train), dtype=torch.uint8),
                    corpora.load_split(root, args.corpus, "test"))
    raise SystemExit(f"corpus {args.corpus} not found in {roots}: build it with bench/corpora.py")


def eval_documents(test: bytes, eval_bytes: float, max_doc: Optional[int]) -> list[bytes]:
    """The first documents of the test split up to eval_bytes (whole, or cut at max_doc), leaving out
    empty ones (nothing to predict)."""
    docs, total = [], 0
    for doc in corpora.documents(test):
        if total >= eval_bytes:
            break
        if not doc:
            continue
        doc = doc[:max_doc] if max_doc else doc
        docs.append(doc)
        total += len(doc)
    return docs


# ---- models ---------------------------------------------------------------------------------------

def ours_config(args) -> dict[str, Any]:
    cfg = {**PRESETS[args.preset], **common.parse_settings(args.set)}
    if args.model == "ours_nostate":
        cfg["recurrent_layers"] = ()  # the config accepts an empty tuple: no state is written or read
        cfg.pop("read_recurrent_layers", None)
    return cfg


def cut_state_reads(model: nn.Module) -> None:
    """Hold at zero the output projection's columns that take the state reads, in every layer that
    reads a state (the reads are concatenated after the attention output): the model still computes
    its states but never uses them. Their gradient is zeroed as it is computed, so AdamW never moves
    them (its decoupled decay keeps a zero at zero). Call it after moving the model to its device."""
    inner = model.config.heads * model.config.dim_head
    for attention, _ in model.layers:
        weight = attention.to_out.weight
        if weight.shape[1] == inner:  # reads no state
            continue
        keep = torch.ones_like(weight)
        keep[:, inner:] = 0
        with torch.no_grad():
            weight.mul_(keep)
        weight.register_hook(lambda grad, keep=keep: grad * keep)


def xl_kwargs(args, cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(TransformerWrapper keywords, Decoder keywords) of the XL peer, sized like ours."""
    glu = cfg.get("ff_glu", True)
    ff_hidden = feedforward_width(cfg["dim"], cfg.get("ff_mult", 4), glu)  # ours' kind and hidden width
    decoder = dict(dim=cfg["dim"], depth=cfg["depth"], heads=cfg.get("heads", 8), attn_dim_head=cfg.get("dim_head", 64),
                   attn_kv_heads=cfg.get("kv_heads", 1), attn_flash=True, rotary_pos_emb=True,
                   ff_glu=glu, ff_mult=ff_hidden / cfg["dim"], ff_no_bias=True)
    decoder.update(common.parse_settings(args.xl_set))
    wrapper = dict(num_tokens=cfg.get("num_tokens", 256), max_seq_len=args.seg, max_mem_len=args.mem)
    return wrapper, decoder


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_optimizers(model: nn.Module, args, device: torch.device) -> list[torch.optim.Optimizer]:
    """AdamW over every parameter, or with --optimizer muon, Muon over the hidden matrices and AdamW over
    the rest (train.py's split and settings: training/optimizer.py); with --scalar-lr, ours' mixing weights in
    an AdamW group of their own. Each param group's "lr_scale" is its peak rate as a share of --lr: the
    schedule sets every group's rate to learning_rate() times it."""
    groups, matrices = param_groups(model, args.weight_decay, args.optimizer == "muon", args.scalar_lr)
    for group in groups:
        group["lr_scale"] = group.pop("lr", args.lr) / args.lr  # --scalar-lr's group has a rate of its own
    optimizers: list[torch.optim.Optimizer] = [
        torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), fused=device.type == "cuda")]
    if args.optimizer == "muon":
        splits = output_splits(model, matrices) if args.muon_split_qkv else None
        optimizers.append(make_muon(matrices, args.muon_lr, args.weight_decay, splits))
        optimizers[-1].param_groups[0]["lr_scale"] = args.muon_lr / args.lr
    return optimizers


def learning_rate(args, step: int, progress: float) -> float:
    """The rate at a step, `progress` (0..1) into the token or time budget: --warmup linear steps, then
    --schedule's decay to --lr * --min-lr-ratio (train.py's curves: training/optimizer.py)."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    return args.lr * decay_factor(progress, args.schedule, args.min_lr_ratio, args.decay_frac)


def autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


class Ours:
    """Our model trained through TrainStep (through the wrapper, eagerly, with kNN layers), memories and
    states carried from one step to the next."""

    def __init__(self, args, device: torch.device) -> None:
        import block_recurrent_transformer_pytorch as brt
        self.brt = brt
        self.cfg = ours_config(args)
        self.model = brt.BlockRecurrentTransformer(**self.cfg).to(device)
        if args.emb_std is not None:  # an ablation of the initialisation (the seed's: N(0, 1))
            nn.init.normal_(self.model.token_emb.weight, std=args.emb_std)
        if args.model == "ours_unread":
            cut_state_reads(self.model)
        self.seg = self.model.max_seq_len
        self.args, self.device = args, device
        self._make_step()
        self.carry: tuple = (None, None)

    def _make_step(self) -> None:
        args, device = self.args, self.device
        self.wrapper = self.brt.RecurrentTrainerWrapper(self.model, args.mem_dropout, args.state_dropout)
        # TrainStep does not carry a kNN store: such a model trains through the wrapper, eagerly
        self.step_fn = None
        if not self.model.config.knn_layers:
            if device.type == "cuda" and not args.no_compile:
                self.model.compile(fullgraph=True, dynamic=False)
            self.step_fn = self.brt.TrainStep(self.wrapper, cuda_graph=device.type == "cuda" and not args.no_cuda_graph,
                                              amp_dtype=torch.bfloat16 if device.type == "cuda" else None)

    def describe(self) -> dict[str, Any]:
        return dict(config=self.model.config.to_dict(),  # every field (quality_table tells configurations apart by them)
                    version=getattr(self.brt, "__version__", None), module=os.path.dirname(self.brt.__file__))

    @torch.no_grad()
    def diagnostics(self) -> dict[str, Any]:
        """What the state's weights say now (logged with the training loss; weights only, no forward):
        per layer that reads states, the norm of its output projection's columns that take the reads
        over the norm of those that take the attention output (about 1 at the start, both drawn alike;
        0 in ours_unread): whether training grows or shrinks what the reads add. Per state, its fixed
        gate's mean retention per block (None for an lstm gate, whose retention depends on its input).
        With value_residual, each layer's (a, b) of v = a * v + b * v_first; with unet_skips, the skips'
        weights; with embedding_mixing, each layer's (a, b) of its input a * h + b * x0; with attention_gate, each
        layer's largest norm of a head's gate weights (0 at the start: how far a gate can swing from 1)."""
        mixing = {}
        if self.model.config.value_residual:
            mixing["value_mix"] = [[round(w, 4) for w in attention.value_mix.tolist()]
                                   for attention, _ in self.model.layers[1:]]
        if self.model.skip_weights is not None:
            mixing["skip_weights"] = [round(w, 4) for w in self.model.skip_weights.tolist()]
        if self.model.embedding_mix is not None:
            pairs = self.model.embedding_mix.view(-1, 2).tolist()
            mixing["embedding_mix"] = [[round(w, 4) for w in pair] for pair in pairs]
        if self.model.config.attention_gate:
            mixing["head_gate_norm"] = [round(attention.head_gate.norm(dim=1).max().item(), 4)
                                        for attention, _ in self.model.layers]
        if not self.model.states:
            return mixing
        inner = self.model.config.heads * self.model.config.dim_head
        reads = [attention.to_out.weight for attention, _ in self.model.layers if attention.to_out.weight.shape[1] > inner]
        ratios = [round((w[:, inner:].norm() / w[:, :inner].norm()).item(), 4) for w in reads]
        gates = [round(s.gate.bias.sigmoid().mean().item(), 4) if isinstance(s.gate, self.brt.state.FixedGate) else None
                 for s in self.model.states]
        return dict(state_reads_weight=ratios, gate_retention=gates, **mixing)

    def grow_segment(self, segment: int) -> dict[nn.Parameter, nn.Parameter]:
        """Continue training with segments of ``segment`` tokens (max_seq_len): a model of that config
        takes this one's weights (no parameter depends on max_seq_len), trained through a new
        TrainStep; memories and states start afresh. Returns each old parameter's new one, for the
        optimiser's state."""
        old = self.model
        if self.device.type == "cuda" and not self.args.no_compile:
            # The grown model compiles its own graphs into the same code cache as the old one's forward,
            # whose limit (8) its six would pass with fullgraph=True: start that cache afresh, and free
            # the old model, which compilation's reference cycles would keep with its gradients.
            torch._dynamo.reset()
            gc.collect()
        self.cfg = {**self.cfg, "max_seq_len": segment}
        self.model = self.brt.BlockRecurrentTransformer(**self.cfg).to(self.device)
        self.model.load_state_dict(old.state_dict())
        if self.args.model == "ours_unread":
            cut_state_reads(self.model)  # the hook that keeps the read columns at zero is the model's own
        self.seg = segment
        self._make_step()
        self.carry = (None, None)
        return dict(zip(old.parameters(), self.model.parameters()))

    def warm_up(self, rows: int) -> None:
        """Compile and capture every kind of segment training will run (the masked one would otherwise
        be made in the timed window, at the first step where a row starts a new document); nothing to
        do for a model with kNN layers, which trains eagerly."""
        if self.step_fn is not None:
            self.step_fn.warm_up(rows, documents=True)

    def train_step(self, batch: DocumentBatch) -> Tensor:
        """Accumulate the gradient of the mean loss over the batch's labelled positions; returns the
        loss. The memories and states the last step ended with start this one, reset per row where
        its next document starts."""
        memories, states = self.carry
        if self.step_fn is not None:
            loss, memories, states = self.step_fn(batch.inputs, labels=batch.labels, reset=batch.reset,
                                                  xl_memories=memories, states=states, return_memories_and_states=True)
        else:
            inputs, labels, reset = (t.to(self.device, non_blocking=True) for t in (batch.inputs, batch.labels, batch.reset))
            with autocast(self.device):
                loss, memories, states = self.wrapper(inputs, labels=labels, reset=reset, xl_memories=memories,
                                                      states=states, return_memories_and_states=True)
            loss.backward()
            loss = loss.detach()
        self.carry = (memories, states)
        return loss

    def carried(self) -> dict[str, Any]:
        """What the next step starts from (the memories and states the last one ended with), on the CPU."""
        memories, states = self.carry
        return dict(memories=None if memories is None else memories.to("cpu"),
                    states=None if states is None else [state.cpu() for state in states])

    def load_carried(self, carried: dict[str, Any]) -> None:
        """Start the next step from what ``carried`` saved."""
        memories, states = carried["memories"], carried["states"]
        self.carry = (None if memories is None else memories.to(self.device),
                      None if states is None else [state.to(self.device) for state in states])

    @torch.no_grad()
    def eval_segment(self, x: Tensor, memory: Any, keep_states: bool = True) -> tuple[Tensor, Any]:
        """Logits of one segment x (b, seg) and the memory (memories, states) for the next."""
        memories, states = memory if memory is not None else (None, None)
        with autocast(self.device):
            # .forward: eager (a compiled call would compile again for the evaluation's shapes)
            logits, memories, states = self.model.forward(x, xl_memories=memories,
                                                          states=states if keep_states else None)
        return logits, (memories, states)


def memory_mask(valid: Optional[Tensor], reset: Tensor, segment: int, mem_len: int) -> tuple[Optional[Tensor], Tensor]:
    """Per-row memory resets for x-transformers' XL, whose memories are one tensor per layer for the
    whole batch: a mask hides what a row must not see. ``valid`` (rows, memory length) marks the
    carried memories that belong to each row's current document (None: no memories); ``reset``
    (rows,) marks the rows whose segment starts a new document, which see none of them.

    Returns (mask, valid_after): the mask for this segment's ``mem_masks`` (True = attend; None
    without memories), and the validity of the memories the segment leaves, which x-transformers
    makes of the last ``mem_len`` positions of the old memories followed by the segment's own.
    """
    carried = reset.new_zeros(reset.shape[0], 0) if valid is None else valid & ~reset[:, None]
    after = torch.cat((carried, reset.new_ones(reset.shape[0], segment)), dim=1)
    return (None if valid is None else carried), after[:, max(after.shape[1] - mem_len, 0):]


class XL:
    """x-transformers' Transformer-XL: one forward/backward per segment, mems carried detached and
    masked per row where a row's next document starts (as ours resets its memories)."""

    def __init__(self, args, device: torch.device) -> None:
        try:
            import x_transformers
        except ImportError as error:
            raise SystemExit(f"xl needs x-transformers==2.31.10 (pip install -e \".[test]\", or on PYTHONPATH) "
                             f"({error})")
        from x_transformers import Decoder, TransformerWrapper
        self.xt = x_transformers
        self.cfg = ours_config(args)
        self.wrapper_kwargs, self.decoder_kwargs = xl_kwargs(args, self.cfg)
        build = lambda: TransformerWrapper(**self.wrapper_kwargs, attn_layers=Decoder(**self.decoder_kwargs))  # noqa: E731
        if args.xl_match_params:  # a hidden unit costs 3 * dim parameters per layer (GEGLU), 2 * dim (GELU)
            import block_recurrent_transformer_pytorch as brt
            target = param_count(brt.BlockRecurrentTransformer(**self.cfg))
            dim, depth = self.decoder_kwargs["dim"], self.decoder_kwargs["depth"]
            per_unit = (3 if self.decoder_kwargs["ff_glu"] else 2) * dim * depth
            hidden = int(dim * self.decoder_kwargs["ff_mult"]) + round((target - param_count(build())) / per_unit)
            self.decoder_kwargs["ff_mult"] = (hidden + 0.5) / dim
        self.model = build().to(device)
        self.seg, self.mem_len, self.device, self.mem_dropout = args.seg, args.mem, device, args.mem_dropout
        self.forward: Callable = self.model
        if device.type == "cuda" and not args.no_compile:
            self.forward = torch.compile(self.model)
        self.mems: Optional[list[Tensor]] = None
        self.mem_valid: Optional[Tensor] = None  # (rows, memory length): which memories are of the row's document

    def describe(self) -> dict[str, Any]:
        from importlib.metadata import version
        try:
            v = version("x-transformers")
        except Exception:  # noqa: BLE001
            v = None
        return dict(wrapper=self.wrapper_kwargs, decoder=self.decoder_kwargs, version=v,
                    module=os.path.dirname(self.xt.__file__))

    def diagnostics(self) -> dict[str, Any]:
        """No state to report on."""
        return {}

    def warm_up(self, rows: int) -> None:
        """Nothing to prepare: the untimed steps compile the one graph (a segment with memories)."""

    def train_step(self, batch: DocumentBatch) -> Tensor:
        """As ours: the mean loss over the labelled positions, its gradient accumulated."""
        x, labels = batch.inputs.to(self.device, non_blocking=True), batch.labels.to(self.device, non_blocking=True)
        reset = batch.reset.to(self.device, non_blocking=True)
        segments = x.shape[1] // self.seg
        labelled = (labels != IGNORE).sum().clamp(min=1)
        total = torch.zeros((), device=self.device)
        for i in range(segments):
            if self.mem_dropout and random.random() < self.mem_dropout:
                self.mems = None
            window = slice(i * self.seg, (i + 1) * self.seg)
            valid = None if self.mems is None else self.mem_valid
            mem_mask, self.mem_valid = memory_mask(valid, reset[:, i], self.seg, self.mem_len)
            with autocast(self.device):
                if self.mems is None:  # eagerly: compiled (torch 2.11), its flash-attention backward fails
                    logits, self.mems = self.model(x[:, window], return_mems=True)  # inductor's stride check
                else:  # with memories x-transformers passes a mask (no flash kernel)
                    logits, self.mems = self.forward(x[:, window], mems=self.mems, return_mems=True,
                                                     mem_masks=[mem_mask] * len(self.mems))
            # One memory layout from every segment: the compiled forward is specialised on its inputs' strides,
            # and x-transformers returns memories of other strides from a segment without memories than from one
            # with them (a view of memories + segment), so without this the first timed step compiled a new graph.
            self.mems = [m.contiguous() for m in self.mems]
            loss = F.cross_entropy(logits.float().transpose(1, 2), labels[:, window], ignore_index=IGNORE,
                                   reduction="sum") / labelled
            loss.backward()
            total = total + loss.detach()
        return total

    def carried(self) -> dict[str, Any]:
        """What the next step starts from (the memories and which of them are each row's), on the CPU."""
        return dict(mems=None if self.mems is None else [m.cpu() for m in self.mems],
                    mem_valid=None if self.mem_valid is None else self.mem_valid.cpu())

    def load_carried(self, carried: dict[str, Any]) -> None:
        """Start the next step from what ``carried`` saved."""
        mems, valid = carried["mems"], carried["mem_valid"]
        self.mems = None if mems is None else [m.to(self.device) for m in mems]
        self.mem_valid = None if valid is None else valid.to(self.device)

    @torch.no_grad()
    def eval_segment(self, x: Tensor, memory: Any, keep_states: bool = True) -> tuple[Tensor, Any]:
        with autocast(self.device):
            logits, mems = self.model(x, mems=memory, return_mems=True)  # eager, as ours' evaluation
        return logits, mems


# ---- evaluation -------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(peer: Any, docs: list[bytes], batch: int, keep_states: bool = True) -> dict[str, Any]:
    """bits/byte over every byte of docs, overall, by byte offset within the document, and per document
    (in the order of docs: two runs evaluated on the same documents can be compared document by
    document, which tells a spread between runs spread over every document from one made by a few)."""
    device, seg = peer.device, peer.seg
    was_training = peer.model.training
    peer.model.eval()
    edges = torch.tensor([lo for lo, _ in BUCKETS[1:]], device=device)
    sums = torch.zeros(len(BUCKETS), device=device, dtype=torch.float64)
    counts = torch.zeros(len(BUCKETS), device=device, dtype=torch.float64)
    doc_sums = torch.zeros(len(docs), device=device, dtype=torch.float64)
    order = sorted(range(len(docs)), key=lambda i: (-len(docs[i]), i))
    start = time.perf_counter()
    for first in range(0, len(order), batch):
        rows = [docs[i] for i in order[first:first + batch]]
        length = math.ceil(max(len(r) for r in rows) / seg) * seg
        tokens = torch.zeros(batch, length + 1, dtype=torch.long)  # padded rows keep the batch shape constant
        valid = torch.zeros(batch, length, dtype=torch.bool)
        for r, doc in enumerate(rows):
            tokens[r, 0] = corpora.SEPARATOR  # a document follows a separator, as in training
            tokens[r, 1:len(doc) + 1] = torch.frombuffer(bytearray(doc), dtype=torch.uint8).long()
            valid[r, :len(doc)] = True
        tokens, valid = tokens.to(device), valid.to(device)
        doc_index = torch.tensor(order[first:first + batch], device=device)
        memory = None
        for s in range(0, length, seg):
            logits, memory = peer.eval_segment(tokens[:, s:s + seg], memory, keep_states)
            loss = F.cross_entropy(logits.float().transpose(1, 2), tokens[:, s + 1:s + seg + 1], reduction="none")
            bucket = torch.bucketize(torch.arange(s, s + seg, device=device), edges, right=True)
            mask = valid[:, s:s + seg]
            sums.index_add_(0, bucket, (loss * mask).sum(0).double())
            counts.index_add_(0, bucket, mask.sum(0).double())
            doc_sums.index_add_(0, doc_index, (loss * mask).sum(1)[:len(rows)].double())
    sums, counts, doc_sums = sums.cpu(), counts.cpu(), doc_sums.cpu()
    peer.model.train(was_training)
    by_offset = {corpora.bucket_name(lo, hi): dict(bpb=round(float(sums[i] / counts[i]) / LN2, 4) if counts[i] else None,
                                                   bytes=int(counts[i]))
                 for i, (lo, hi) in enumerate(BUCKETS)}
    by_document = [round(float(doc_sums[i]) / len(doc) / LN2, 4) for i, doc in enumerate(docs)]
    return dict(bpb=round(float(sums.sum() / counts.sum()) / LN2, 4), bytes=int(counts.sum()), documents=len(docs),
                by_offset=by_offset, by_document=by_document, document_bytes=[len(doc) for doc in docs],
                eval_s=round(time.perf_counter() - start, 1))


# ---- training ---------------------------------------------------------------------------------------

def load_compile_cache(path: Optional[str]) -> bool:
    """Fill torch.compile's caches from ``path`` (--compile-cache) where that file exists; True if it did."""
    if not path or not os.path.exists(path):
        return False
    torch.compiler.load_cache_artifacts(Path(path).read_bytes())
    return True


def save_compile_cache(path: str) -> bool:
    """Write what this process compiled to ``path`` (through a temporary file: a run killed meanwhile
    leaves no partial cache for the next to load); False, writing nothing, where nothing was compiled
    (e.g. --no-compile, or a CPU run)."""
    artifacts = torch.compiler.save_cache_artifacts()
    if artifacts is None:
        return False
    folder = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".compile_cache.", delete=False) as partial:
        partial.write(artifacts[0])
    os.replace(partial.name, path)
    return True


def compile_cache_counts() -> dict[str, int]:
    """How many of the graphs inductor compiled so far it found in its cache (hit) or made (miss): what
    --compile-cache "loaded" saved."""
    from torch._dynamo.utils import counters
    return {kind: counters["inductor"][f"fxgraph_cache_{kind}"] for kind in ("hit", "miss")}


# ---- resuming (--checkpoint) ----------------------------------------------------------------------

# The flags that may differ between the calls of one run: where each call writes and how long it trains.
# --device may be spelt differently ("cuda", "cuda:1", left out), but the kind of device a run trains on may not
# change: load_run checks it apart.
PER_CALL_FLAGS = frozenset({"out", "impl", "stop_after", "stop_at_step", "untimed_steps", "compile_cache",
                            "device", "corpora", "checkpoint"})


def run_flags(args) -> dict[str, Any]:
    """The flags that make a run what it is (all but PER_CALL_FLAGS): a resumed run must be given the same."""
    return {name: value for name, value in vars(args).items() if name not in PER_CALL_FLAGS}


def save_run(path: str, args, device: torch.device, peer: Any, optimizers: list[torch.optim.Optimizer],
             streams: DocumentStreams, progress: dict[str, Any]) -> None:
    """Write to ``path``, atomically, all that the run's next step depends on: the weights, the optimisers'
    moments, where each row is in its document, the memories and states carried, every random stream,
    the kind of device it trains on, ours' model config, and ``progress`` (the step, the clock so far, the
    unlogged part of the train curve)."""
    model_config = peer.model.config.to_dict() if isinstance(peer, Ours) else None
    save_checkpoint(dict(flags=run_flags(args), device=device.type, model_config=model_config,
                         model=peer.model.state_dict(),
                         optimizers=[optimizer.state_dict() for optimizer in optimizers],
                         streams=streams.state_dict(), carried=peer.carried(), rng=rng_state(), progress=progress),
                    Path(path))


def differences(saved: dict[str, Any], now: dict[str, Any], now_name: str) -> str:
    """"KEY: saved X, <now_name> Y" for each key whose value differs between saved and now, joined; "" if none."""
    return ", ".join(f"{key}: saved {saved.get(key)!r}, {now_name} {now.get(key)!r}"
                     for key in sorted(saved.keys() | now.keys()) if saved.get(key) != now.get(key))


def load_run(path: str, args, device: torch.device) -> dict[str, Any]:
    """The run that ``save_run`` wrote to ``path``, once it is known that this call may continue it: the same
    run flags, the same kind of device, for ours the same model (a preset's fields may change between
    versions), and a --stop-at-step past its step (SystemExit naming what differs)."""
    saved = load_checkpoint(Path(path))
    given = differences(saved["flags"], run_flags(args), "given")
    if given:
        raise SystemExit(f"--checkpoint {path} holds a run of other flags ({given}): continue it with the flags it "
                         f"started with, or give another --checkpoint to start afresh")
    if "device" not in saved:
        raise SystemExit(f"--checkpoint {path} was written before checkpoints named their kind of device: "
                         f"give another --checkpoint to start afresh")
    if saved["device"] != device.type:
        # the kernels differ (CUDA graphs, fused optimisers, bf16 autocast): the run would go on as another one
        raise SystemExit(f"--checkpoint {path} holds a run trained on {saved['device']}, this call trains on "
                         f"{device.type}: continue it on {saved['device']} (--device)")
    if args.model != "xl":
        if saved.get("model_config") is None:
            raise SystemExit(f"--checkpoint {path} was written before checkpoints held their model's config (the "
                             f"preset's may have changed since): give another --checkpoint to start afresh")
        try:  # the fields added since at their defaults: what the saved model is in this version
            saved_model = BlockRecurrentConfig(**saved["model_config"]).to_dict()
        except (TypeError, ValueError) as error:
            raise SystemExit(f"--checkpoint {path} holds a model config this version cannot read ({error}): give "
                             f"another --checkpoint to start afresh") from None
        other = differences(saved_model, BlockRecurrentConfig(**ours_config(args)).to_dict(), "now")
        if other:
            raise SystemExit(f"--checkpoint {path} holds a run of another model ({other}; --preset's fields change "
                             f"between versions): give another --checkpoint to start afresh")
    if args.stop_at_step is not None and args.stop_at_step <= saved["progress"]["step"]:
        raise SystemExit(f"--stop-at-step {args.stop_at_step}: --checkpoint {path} holds the run at step "
                         f"{saved['progress']['step']} already; give a later step")
    return saved


def restore_run(saved: dict[str, Any], peer: Any, optimizers: list[torch.optim.Optimizer],
                streams: DocumentStreams) -> None:
    """Put the run ``load_run`` returned back into peer, optimizers and streams (its random streams the
    caller sets just before the first step it trains)."""
    peer.model.load_state_dict(saved["model"])
    for optimizer, state in zip(optimizers, saved["optimizers"], strict=True):
        optimizer.load_state_dict(state)
    streams.load_state_dict(saved["streams"])
    peer.load_carried(saved["carried"])


def grow(peer: Ours, optimizers: list[torch.optim.Optimizer], streams: DocumentStreams, rows: int,
         segment: int) -> list[nn.Parameter]:
    """Switch a run to ``rows`` rows of segments of ``segment`` tokens (--grow-at): the model takes the
    longer segment (its parameters, and the optimiser's moments of them, carried over), and the
    document reader keeps its first ``rows`` rows reading where they are (the others' documents are
    left unfinished) and its order of documents, so that no document is read twice. Returns the
    parameters to clip."""
    new = peer.grow_segment(segment)
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["params"] = [new[p] for p in group["params"]]
        moments = {new[p]: state for p, state in optimizer.state.items()}
        optimizer.state.clear()
        optimizer.state.update(moments)
    streams.rows, streams.segment = rows, segment
    del streams.piece[rows:], streams.offset[rows:]
    if len(streams.piece) < rows:
        streams.piece += [-1] * (rows - len(streams.piece))
        streams.offset += [0] * (rows - len(streams.offset))
    return [p for p in peer.model.parameters() if p.requires_grad]


def run(args) -> list[dict[str, Any]]:
    started = time.perf_counter()
    device = common.pick_device("cpu" if args.tiny and args.device is None else args.device)
    common.setup_precision()
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    # the run to continue, checked before --out is opened: a refused call leaves the file as it was
    saved = load_run(args.checkpoint, args, device) if args.checkpoint and os.path.exists(args.checkpoint) else None
    records: list[dict[str, Any]] = []
    writer = common.JsonlWriter(args.out)

    def write(record: dict[str, Any]) -> None:
        record = dict(model=args.model, impl=args.impl, **record)
        records.append(record)
        writer(record)

    corpus_name, train_data, test = load_corpus(args)
    peer = XL(args, device) if args.model == "xl" else Ours(args, device)
    if args.seq % peer.seg:
        raise SystemExit(f"--seq {args.seq} must be a multiple of the segment length {peer.seg}")
    params = param_count(peer.model)
    emb = sum(m.weight.numel() for m in peer.model.modules() if isinstance(m, nn.Embedding))
    docs = eval_documents(test, args.eval_bytes, args.eval_max_doc)
    tokens_per_step = args.batch * args.seq
    write(dict(kind="config", corpus=corpus_name, train_bytes=len(train_data), test_bytes=len(test),
               eval_documents=len(docs), eval_bytes=sum(map(len, docs)), params=params, params_embedding=emb,
               segment=peer.seg, tokens_per_step=tokens_per_step, device=str(device), torch=torch.__version__,
               gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
               args={k: v for k, v in vars(args).items()}, **peer.describe()))
    print(f"{args.model}: {params / 1e6:.2f}M parameters ({emb / 1e6:.2f}M in embeddings)", flush=True)

    optimizers = make_optimizers(peer.model, args, device)
    params_list = [p for p in peer.model.parameters() if p.requires_grad]
    streams = DocumentStreams(train_data, corpora.SEPARATOR, args.batch, peer.seg, shuffle=True,
                              seed=args.seed, ignore_index=IGNORE)
    total_steps = math.ceil(args.tokens / tokens_per_step) if args.tokens else None
    # what the earlier calls of a run resumed with --checkpoint did: its steps, its clock, its unlogged train curve
    earlier: dict[str, Any] = dict(step=0, train_s=0.0, timed_steps=0, warmup_s=0.0, calls=0,
                                   curve=[torch.zeros(()) for _ in range(3)])
    if saved is not None:
        restore_run(saved, peer, optimizers, streams)
        earlier = saved["progress"]
        write(dict(kind="resume", steps=earlier["step"], tokens=earlier["step"] * tokens_per_step,
                   calls=earlier["calls"]))
    step, cut = earlier["step"], False
    curve_loss, curve_norm, curve_clipped = (t.to(device) for t in earlier["curve"])
    warmup_s, train_s, clock_start = 0.0, 0.0, None
    wall = time.perf_counter()
    # --compile-cache: "loaded", "saved" or "nothing compiled" (None without it)
    cache = "loaded" if load_compile_cache(args.compile_cache) else None
    peer.warm_up(args.batch)  # before the clock, as the untimed steps
    if saved is not None:
        # last before the first step: the warm-up draws nothing from them (TrainStep.warm_up draws no dropout),
        # but nothing it does (compiling, capturing CUDA graphs) then stands between them and the step
        set_rng_state(saved["rng"])
    segments_per_step = args.seq // peer.seg  # one from --grow-at on
    first_step = step
    while True:
        if total_steps is not None and step >= total_steps:
            break
        if args.seconds is not None and clock_start is not None and time.perf_counter() - clock_start >= args.seconds:
            break
        if (args.stop_after is not None and time.perf_counter() - started >= args.stop_after
                or args.stop_at_step is not None and step >= args.stop_at_step):
            cut = True
            break
        if step == first_step + args.untimed_steps:  # each call compiles afresh
            if args.compile_cache and cache is None:
                cache = "saved" if save_compile_cache(args.compile_cache) else "nothing compiled"
            common.synchronize(device)
            warmup_s += time.perf_counter() - wall
            clock_start = time.perf_counter()
            timed_from = step
        if step == args.grow_at:
            # untimed, like the first steps: a new TrainStep captures (and compiles) the longer segment
            common.synchronize(device)
            grown = time.perf_counter()
            params_list = grow(peer, optimizers, streams, args.grow_batch, args.grow_seq)
            segments_per_step = 1
            peer.warm_up(args.grow_batch)
            common.synchronize(device)
            grow_s = time.perf_counter() - grown
            if clock_start is not None:
                clock_start += grow_s
            warmup_s += grow_s
            write(dict(kind="grow", step=step, rows=args.grow_batch, segment=args.grow_seq, grow_s=round(grow_s, 1)))
        progress = (step / total_steps if total_steps else
                    0.0 if clock_start is None else (time.perf_counter() - clock_start) / args.seconds)
        rate = learning_rate(args, step, progress)
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group["lr"] = rate * group["lr_scale"]
        batch = streams.next(segments_per_step)
        if device.type == "cuda":
            batch = DocumentBatch(*(t.pin_memory() for t in (batch.inputs, batch.labels, batch.reset, batch.offsets)))
        loss = peer.train_step(batch)
        grad_norm = torch.nn.utils.clip_grad_norm_(params_list, args.clip)  # the norm before clipping
        curve_norm += grad_norm
        curve_clipped += grad_norm > args.clip
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=False)  # TrainStep keeps its gradient buffers
        curve_loss += loss
        step += 1
        if step % args.log_every == 0:
            mean, mean_norm, clipped = (t.item() / args.log_every for t in (curve_loss, curve_norm, curve_clipped))
            for t in (curve_loss, curve_norm, curve_clipped):
                t.zero_()
            elapsed = earlier["train_s"] + time.perf_counter() - clock_start if clock_start is not None else None
            timed_steps = earlier["timed_steps"] + step - timed_from if clock_start is not None else 0
            write(dict(kind="train", step=step, tokens=step * tokens_per_step, loss=round(mean, 4),
                       bpb=round(mean / LN2, 4), lr=common.round_sig(rate),
                       grad_norm=round(mean_norm, 4), clipped=round(clipped, 3),
                       train_s=None if elapsed is None else round(elapsed, 1),
                       tokens_per_s=round(timed_steps * tokens_per_step / elapsed) if elapsed else None,
                       **peer.diagnostics()))
    common.synchronize(device)
    if clock_start is None:  # fewer steps than untimed steps
        warmup_s, clock_start, timed_from = warmup_s + time.perf_counter() - wall, time.perf_counter(), step
    train_s = earlier["train_s"] + time.perf_counter() - clock_start
    timed_steps = earlier["timed_steps"] + step - timed_from
    warmup_s += earlier["warmup_s"]
    calls = earlier["calls"] + 1
    if cut and args.checkpoint:
        save_run(args.checkpoint, args, device, peer, optimizers, streams,
                 dict(step=step, train_s=train_s, timed_steps=timed_steps, warmup_s=warmup_s, calls=calls,
                      curve=[t.cpu() for t in (curve_loss, curve_norm, curve_clipped)]))
        write(dict(kind="checkpoint", path=args.checkpoint, steps=step, tokens=step * tokens_per_step,
                   train_s=round(train_s, 1), warmup_s=round(warmup_s, 1), calls=calls))
        print(f"saved the run at step {step} to {args.checkpoint}: run again with the same flags to continue",
              flush=True)
        return records
    timed_tokens = timed_steps * tokens_per_step
    result = dict(kind="result", corpus=corpus_name, params=params, steps=step, tokens=step * tokens_per_step, cut=cut,
                  calls=calls, warmup_s=round(warmup_s, 1), untimed_steps=step - timed_steps,
                  train_s=round(train_s, 1),
                  tokens_per_s=round(timed_tokens / train_s) if train_s > 0 and timed_tokens else None,
                  peak_gib=common.peak_gib(device),
                  compile_cache=cache, compile_cache_graphs=compile_cache_counts() if cache == "loaded" else None)
    result["eval"] = evaluate(peer, docs, args.eval_batch)
    if args.model != "xl" and not args.no_nostate_eval and peer.model.config.recurrent_layers:
        result["nostate_eval"] = evaluate(peer, docs, args.eval_batch, keep_states=False)
    write(result)
    return records


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
