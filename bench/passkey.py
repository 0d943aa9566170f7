"""Passkey recall: does memory reach far back? (issue 6, long-range memory)

A sample states a random 5-digit key once, buries it under D bytes of neutral filler, then asks
for it back (vocabulary = bytes):

    [filler pad] the pass key is 71432. remember it. [D bytes of filler] what is the pass key? the pass key is 71432

Each variant (a model configuration plus training settings, ``variants()``) is trained from scratch
for a fixed time on one GPU, on samples with D drawn uniformly from [0, largest], the largest growing
from 0 to --train-filler over the first half of the budget (--curriculum), then scored
at D = 1k, 4k, 16k, 64k (and 256k with --long): the fraction of trials whose 5 key digits are all
the argmax of the logits at their positions, the sequence fed through the model one segment of
max_seq_len at a time with memories and states carried, as a user would run a long document.
Teacher-forced argmax equals greedy decoding here: greedy emits the key exactly when every digit
is the argmax given the digits before it, which is what is checked.

Training loss = cross-entropy on the 5 answer digits + ``--lm-loss-weight`` x the mean next-byte
loss over the whole sample (a denser signal: the answer is 5 tokens a sample). The samples of a
batch share one layout: filler pads the front so that the answer ends the last segment; a step
holds about batch_size x the full training length in tokens, so short samples come many at a
time. Gradients are truncated every ``bptt_segments`` segments (windows aligned to the end, so the
answer's window is always full); bf16 autocast and fused AdamW on CUDA, the learning rate warms
up then follows a cosine over the time budget.

One variant per 10-minute GPU call (the JSONL, and the markdown table beside it as .md):

    PYTHONPATH=$PWD python bench/passkey.py --variants state_kseg --train-seconds 240 --max-seconds 540 \\
        --out bench_out/passkey_state_kseg.jsonl
    python bench/passkey.py --device cpu --tiny          # a smoke test without a GPU

A variant that fails (out of memory, a package lacking a feature) writes an "error" record and the
others still run; with --max-seconds a variant whose training would not fit is skipped, and an
evaluation stops adding trials at the deadline (its record says how many it ran).
"""

from __future__ import annotations

import math
import random
import shlex
import sys
import time
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import common

import block_recurrent_transformer_pytorch as brt

# ---- the task ----------------------------------------------------------------------------------

INTRO = "the pass key is {key}. remember it. "
QUESTION = "what is the pass key? the pass key is "
# the filler of the passkey tests in the long-context literature: no digits, nothing to remember
FILLER = "the grass is green. the sky is blue. the sun is yellow. here we go. there and back again. "
KEY_DIGITS = 5
NUM_TOKENS = 256  # bytes


@dataclass
class Sample:
    """One passkey sample as bytes; input = tokens[:-1], targets = tokens[1:]."""

    tokens: bytes
    key: str
    key_start: int       # index of the key's first digit in the intro
    question_start: int  # index of the question's first byte (= end of the D filler bytes)
    answer_start: int    # index of the answer's first digit (= len(tokens) - KEY_DIGITS)


def filler_text(length: int, offset: int) -> bytes:
    """``length`` bytes of the filler, cycled, starting ``offset`` bytes into it."""
    text = FILLER.encode()
    return (text * ((offset + length) // len(text) + 1))[offset:offset + length]


def core_length(filler_len: int) -> int:
    """Bytes of a sample without its front padding: intro, filler, question and answer."""
    return len(INTRO.format(key="0" * KEY_DIGITS)) + filler_len + len(QUESTION) + KEY_DIGITS


def sample_length(max_filler: int, seq_len: int) -> int:
    """Bytes per sample for fillers up to ``max_filler``: the input (all but the last byte) padded
    to whole segments, so that the answer always ends the last segment."""
    return math.ceil((core_length(max_filler) - 1) / seq_len) * seq_len + 1


def make_sample(filler_len: int, length: int, rng: random.Random) -> Sample:
    """A sample of exactly ``length`` bytes whose key sits ``filler_len`` filler bytes before the
    question; the front is padded with filler. Both fillers start at random offsets into the cycle,
    so the key's position relative to the filler's phase carries no hint."""
    pad = length - core_length(filler_len)
    if pad < 0:
        raise ValueError(f"filler_len {filler_len} needs at least {core_length(filler_len)} bytes, got length {length}")
    key = f"{rng.randrange(10 ** KEY_DIGITS):0{KEY_DIGITS}d}"
    intro = INTRO.format(key=key).encode()
    tokens = (filler_text(pad, rng.randrange(len(FILLER))) + intro
              + filler_text(filler_len, rng.randrange(len(FILLER))) + QUESTION.encode() + key.encode())
    return Sample(tokens=tokens, key=key, key_start=pad + INTRO.index("{key}"),
                  question_start=pad + len(intro) + filler_len, answer_start=length - KEY_DIGITS)


def make_batch(filler_lens: list[int], length: int, rng: random.Random) -> Tensor:
    """(len(filler_lens), length) int64 byte tokens, one sample per filler length."""
    data = b"".join(make_sample(d, length, rng).tokens for d in filler_lens)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(len(filler_lens), length).long()


def recall(answer_logits: Tensor, answers: Tensor) -> Tensor:
    """Per row, 1.0 if every answer digit is the argmax of its logits, else 0.0.

    answer_logits (b, KEY_DIGITS, vocab) are the logits that predict the digits; answers (b, KEY_DIGITS).
    """
    return (answer_logits.argmax(-1) == answers).all(-1).float()


# ---- running a model over long sequences -------------------------------------------------------

def autocast(device: torch.device) -> AbstractContextManager:
    """bf16 autocast on CUDA; fp32 on CPU, where bf16 is slow."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def last_segment_logits(model: Callable, x: Tensor, device: torch.device) -> Tensor:
    """Logits of the last segment of x (b, k * max_seq_len), fed one segment at a time with memories
    and states carried; earlier segments' logits are dropped as they come."""
    memories = states = None
    for segment in x.split(model.max_seq_len, dim=1):
        with autocast(device):
            logits, memories, states = model(segment, xl_memories=memories, states=states)
    return logits


def evaluate(model: Callable, filler_len: int, trials: int, batch_size: int, seed: int, device: torch.device,
             deadline: float = math.inf) -> dict[str, Any]:
    """Recall (all digits right) and digit accuracy over ``trials`` samples at filler length D.

    ``model(x, xl_memories=, states=) -> (logits, memories, states)`` with a ``max_seq_len``. The
    samples depend only on (seed, D), so every variant is scored on the same keys and fillers.
    Stops adding batches once ``deadline`` (perf_counter) has passed; ``trials`` reports how many ran.
    """
    rng = random.Random(seed * 1_000_003 + filler_len)
    length = sample_length(filler_len, model.max_seq_len)
    hits, digits, done = 0.0, 0.0, 0
    start = time.perf_counter()
    while done < trials and time.perf_counter() < deadline:
        batch = make_batch([filler_len] * min(batch_size, trials - done), length, rng).to(device)
        logits = last_segment_logits(model, batch[:, :-1], device)[:, -KEY_DIGITS:].float()
        answers = batch[:, -KEY_DIGITS:]
        hits += recall(logits, answers).sum().item()
        digits += (logits.argmax(-1) == answers).float().mean(-1).sum().item()
        done += batch.shape[0]
    return dict(filler=filler_len, trials=done, recall=hits / max(done, 1), digit_acc=digits / max(done, 1),
                seconds=round(time.perf_counter() - start, 2))


# ---- configuration and variants ----------------------------------------------------------------

# small and fast; 2 blocks per segment, the recurrent layer near the top as in the official code
MODEL: dict[str, Any] = dict(num_tokens=NUM_TOKENS, dim=384, depth=4, dim_head=64, heads=6, max_seq_len=512,
                             block_width=256, num_state_vectors=128, recurrent_layers=(3,), use_flash_attn=True)
TINY_MODEL: dict[str, Any] = dict(num_tokens=NUM_TOKENS, dim=64, depth=2, dim_head=16, heads=4, max_seq_len=64,
                                  block_width=32, num_state_vectors=16, recurrent_layers=(2,), use_flash_attn=True)


@dataclass
class Config:
    """Every setting of a run; a variant overrides training fields (e.g. bptt_segments) for itself."""

    variants: tuple[str, ...] = ("xl_only", "state_1seg", "state_kseg", "state_compressed", "knn", "knn_top128",
                                 "query_routed", "routed")
    model: dict[str, Any] = field(default_factory=lambda: dict(MODEL))
    # training
    train_seconds: float = 300.0  # per variant
    max_steps: Optional[int] = None  # stop earlier after this many steps
    train_filler: int = 2048  # training D ~ uniform [0, largest]; the largest grows to this
    curriculum: float = 0.5  # fraction of the budget over which the largest D grows from 0 (0: no ramp)
    batch_size: int = 32  # samples per step at the full train_filler; shorter samples come in more per step
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    lm_loss_weight: float = 0.1
    bptt_segments: int = 1  # segments per gradient window (truncated backprop through time)
    kseg: int = 4  # bptt_segments of the state_kseg variant
    log_every: int = 100
    # evaluation
    fillers: tuple[int, ...] = (1024, 4096, 16384, 65536)
    trials: int = 100
    eval_batch: int = 50
    # run
    max_seconds: Optional[float] = None  # wall-time cap for the whole run
    eval_reserve: float = 60.0  # seconds kept for evaluation when deciding whether a variant fits
    seed: int = 0
    device: Optional[str] = None
    out: str = "bench_out/passkey.jsonl"
    impl: str = "ours"


TINY = dict(model=TINY_MODEL, train_seconds=60.0, max_steps=3, train_filler=96, batch_size=4, warmup_steps=1,
            log_every=1, fillers=(64, 256), trials=2, eval_batch=2, kseg=2, eval_reserve=0.0,
            out="bench_out/passkey_tiny.jsonl")


@dataclass
class Variant:
    """What a variant changes: constructor arguments on top of ``Config.model``, and Config fields."""

    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


def variants(cfg: Config) -> dict[str, Variant]:
    """Every variant by name. A new memory kind is one more entry here.
    The training and evaluation loops need only ``model(x, xl_memories=, states=[, detach=])``."""
    depth, block_width = cfg.model["depth"], cfg.model["block_width"]
    return {
        "xl_only": Variant(model=dict(recurrent_layers=())),  # attention over the XL memory, no state
        "state_1seg": Variant(),
        "state_kseg": Variant(train=dict(bptt_segments=cfg.kseg)),
        "state_compressed": Variant(model=dict(use_compressed_mem=True)),
        # kNN memory in the top layer, holding 1024 blocks (262,144 tokens at the default block width:
        # the key stays in reach at D = 256k)
        "knn": Variant(model=dict(knn_layers=(depth,), knn_memory_size=1024 * block_width, knn_top_k=32)),
        # 4x the retrieved entries: while training, more chances that the key's entries are among them
        # (a retrieval gets gradients only for what it retrieved)
        "knn_top128": Variant(model=dict(knn_layers=(depth,), knn_memory_size=1024 * block_width, knn_top_k=128)),
        # the same store and top 32, each query searching only the groups of 16 entries whose mean key it
        # matches best, 2 blocks' worth of entries as "routed" chooses (32 groups at blocks of 256)
        "query_routed": Variant(model=dict(knn_layers=(depth,), knn_memory_size=1024 * block_width, knn_top_k=32,
                                           knn_retrieval="query_routed", knn_route_groups=2 * block_width // 16)),
        # the same store, a learned CoLT5 router choosing 2 blocks' worth of entries per block
        "routed": Variant(model=dict(knn_layers=(depth,), knn_memory_size=1024 * block_width,
                                     knn_top_k=2 * block_width, knn_retrieval="routed")),
    }


# ---- training ----------------------------------------------------------------------------------

def segment_windows(num_segments: int, k: int) -> list[range]:
    """Consecutive segments sharing one autograd graph, k at a time, aligned to the end: the answer
    loss sits in the last segment, so its window always reaches back the full k segments."""
    return [range(max(end - k, 0), end) for end in reversed(range(num_segments, 0, -k))]


def train_step(model: nn.Module, batch: Tensor, cfg: Config, device: torch.device) -> tuple[Tensor, Tensor]:
    """Forward and backward over one batch (b, k * max_seq_len + 1), window by window; gradients
    accumulate in the parameters. Returns the (answer loss, next-byte loss), detached."""
    seq_len = model.max_seq_len
    x, y = batch[:, :-1], batch[:, 1:]
    num_segments = x.shape[1] // seq_len
    keep_graph = dict(detach=cfg.bptt_segments == 1)
    memories, states, lm_loss = None, None, 0.0
    for window in segment_windows(num_segments, cfg.bptt_segments):
        loss = 0.0
        for i in window:
            part = slice(i * seq_len, (i + 1) * seq_len)
            with autocast(device):
                logits, memories, states = model(x[:, part], xl_memories=memories, states=states, **keep_graph)
                segment_lm = F.cross_entropy(logits.flatten(0, 1), y[:, part].flatten()) / num_segments
                loss = loss + cfg.lm_loss_weight * segment_lm
                if i == num_segments - 1:
                    answer_loss = F.cross_entropy(logits[:, -KEY_DIGITS:].flatten(0, 1),
                                                  y[:, -KEY_DIGITS:].flatten())
                    loss = loss + answer_loss
            lm_loss = lm_loss + segment_lm.detach()
        loss.backward()
        memories, states = memories.detach(), [s.detach() for s in states]
    return answer_loss.detach(), lm_loss


def make_optimizer(model: nn.Module, cfg: Config, device: torch.device) -> torch.optim.AdamW:
    """AdamW, weight decay on matrices and embeddings only (not on norm gains and biases)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [dict(params=[p for p in params if p.ndim >= 2], weight_decay=cfg.weight_decay),
              dict(params=[p for p in params if p.ndim < 2], weight_decay=0.0)]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=device.type == "cuda")


def learning_rate(cfg: Config, step: int, progress: float) -> float:
    """Linear warmup over steps, then cosine to min_lr_ratio over the run's progress in [0, 1]
    (time-based: the schedule completes within the budget whatever the step rate)."""
    warmup = min(1.0, (step + 1) / cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr * warmup * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def largest_filler(cfg: Config, progress: float) -> int:
    """The curriculum: the largest training D at this point of the run. Copying is learned first
    where attention alone reaches the key (and on short, cheap samples); longer D then leave the
    memory as the only path."""
    if cfg.curriculum <= 0:
        return cfg.train_filler
    return round(cfg.train_filler * min(1.0, progress / cfg.curriculum))


def train(model: nn.Module, cfg: Config, device: torch.device, seconds: float) -> dict[str, Any]:
    """Train for ``seconds`` (or cfg.max_steps); returns steps, time, throughput and final losses."""
    model.train()
    opt = make_optimizer(model, cfg, device)
    rng = random.Random(cfg.seed)  # every variant trains on the same sample stream
    losses: list[tuple[Tensor, Tensor]] = []
    full = sample_length(cfg.train_filler, model.max_seq_len)
    step, tokens, start = 0, 0, time.perf_counter()
    while True:
        progress = (time.perf_counter() - start) / seconds
        if cfg.max_steps:
            progress = max(progress, step / cfg.max_steps)
        if progress >= 1:
            break
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, step, progress)
        largest = largest_filler(cfg, progress)
        length = sample_length(largest, model.max_seq_len)
        # about the same tokens every step: short samples early in the curriculum come many at a
        # time, so the sparse answer signal (5 tokens a sample) arrives faster
        fillers = [rng.randint(0, largest) for _ in range(max(1, cfg.batch_size * (full - 1) // (length - 1)))]
        batch = make_batch(fillers, length, rng).to(device, non_blocking=True)
        tokens += batch[:, :-1].numel()
        losses.append(train_step(model, batch, cfg, device))
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        if step % cfg.log_every == 0:
            answer, lm = losses[-1]
            print(f"  step {step} {time.perf_counter() - start:.0f}s batch {len(fillers)} D<={largest} "
                  f"answer loss {answer.item():.3f} lm loss {lm.item():.3f}", flush=True)
    common.synchronize(device)
    elapsed = time.perf_counter() - start
    tail = losses[-max(1, len(losses) // 10):]  # last 10% of steps: a less noisy final loss
    return dict(steps=step, train_seconds=round(elapsed, 1), tokens_per_s=round(tokens / elapsed),
                largest_filler=largest, answer_loss=round(torch.stack([a for a, _ in tail]).mean().item(), 4),
                lm_loss=round(torch.stack([lm for _, lm in tail]).mean().item(), 4))


# ---- the run -----------------------------------------------------------------------------------

def run_variant(name: str, variant: Variant, cfg: Config, device: torch.device, deadline: float,
                write: Callable[[dict[str, Any]], None]) -> None:
    """Build, train and evaluate one variant, writing its records."""
    cfg = replace(cfg, **variant.train)
    model_kwargs = {**cfg.model, **variant.model}
    torch.manual_seed(cfg.seed)
    model = brt.BlockRecurrentTransformer(**model_kwargs).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base = dict(impl=cfg.impl, variant=name, bptt_segments=cfg.bptt_segments)
    result = train(model, cfg, device, cfg.train_seconds)
    write(dict(case="train", **base, **result, peak_gib=common.peak_gib(device),
               params=sum(p.numel() for p in model.parameters()), model=model_kwargs))
    model.eval()
    for filler_len in cfg.fillers:
        if time.perf_counter() >= deadline:
            write(dict(case="skipped", **base, filler=filler_len, reason="--max-seconds reached"))
            continue
        write(dict(case="eval", **base, **evaluate(model, filler_len, cfg.trials, cfg.eval_batch, cfg.seed,
                                                    device, deadline)))


def short_length(n: int) -> str:
    """1024 -> '1k', 65536 -> '64k', 300 -> '300'."""
    return f"{n // 1024}k" if n % 1024 == 0 and n else str(n)


def markdown_table(records: list[dict[str, Any]], cfg: Config) -> str:
    """variant x D -> recall, with the training time, steps and final losses."""
    head = (["variant", "bptt"] + [f"D={short_length(d)}" for d in cfg.fillers]
            + ["train s", "steps", "answer loss", "lm loss"])
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name in cfg.variants:
        mine = [r for r in records if r.get("variant") == name]
        error = next((r for r in mine if r["case"] in ("error", "skipped") and "filler" not in r), None)
        if error is not None:
            lines.append(f"| {name} | {error['case']}: {error.get('error', error.get('reason'))} |")
            continue
        train_rec = next(r for r in mine if r["case"] == "train")
        evals = {r["filler"]: r for r in mine if r["case"] == "eval"}
        cells = [f"{evals[d]['recall']:.2f} (n={evals[d]['trials']})" if d in evals else "-" for d in cfg.fillers]
        lines.append("| " + " | ".join([name, str(train_rec["bptt_segments"])] + cells + [
            str(train_rec["train_seconds"]), str(train_rec["steps"]), str(train_rec["answer_loss"]),
            str(train_rec["lm_loss"])]) + " |")
    return "\n".join(lines)


def parse_args(argv: Optional[list[str]]) -> Config:
    """Flags override the defaults (or the --tiny defaults) of Config."""
    parser = common.base_parser(__doc__)
    defaults = Config()
    parser.add_argument("--variants", help=f"comma-separated subset of {','.join(defaults.variants)}")
    parser.add_argument("--train-seconds", type=float, help=f"training time per variant ({defaults.train_seconds:g})")
    parser.add_argument("--max-steps", type=int, help="stop training after this many steps")
    parser.add_argument("--train-filler", type=int, help=f"largest training D ({defaults.train_filler})")
    parser.add_argument("--curriculum", type=float,
                        help=f"share of the budget ramping the training D up ({defaults.curriculum:g})")
    parser.add_argument("--batch-size", type=int,
                        help=f"samples per step at the full training D ({defaults.batch_size})")
    parser.add_argument("--lr", type=float, help=f"peak learning rate ({defaults.lr:g})")
    parser.add_argument("--lm-loss-weight", type=float,
                        help=f"weight of the all-bytes loss ({defaults.lm_loss_weight:g})")
    parser.add_argument("--kseg", type=int, help=f"bptt_segments of state_kseg ({defaults.kseg})")
    parser.add_argument("--fillers", help="comma-separated evaluation D (1024,4096,16384,65536)")
    parser.add_argument("--long", action="store_true", help="also evaluate at D = 256k")
    parser.add_argument("--trials", type=int, help=f"samples per D ({defaults.trials})")
    parser.add_argument("--eval-batch", type=int, help=f"evaluation batch ({defaults.eval_batch})")
    parser.add_argument("--max-seconds", type=float, help="wall-time cap for the whole run")
    parser.add_argument("--eval-reserve", type=float, help=f"seconds kept for evaluation ({defaults.eval_reserve:g})")
    parser.add_argument("--log-every", type=int, help=f"steps between loss prints ({defaults.log_every})")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a model option over the defaults' (or --tiny's), e.g. --set block_width=64; repeatable")
    args = parser.parse_args(argv)

    cfg = replace(defaults, **TINY) if args.tiny else defaults
    given = {f.name: getattr(args, f.name) for f in fields(Config)
             if f.name not in ("variants", "fillers") and getattr(args, f.name, None) is not None}
    if args.variants:
        given["variants"] = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    if args.fillers:
        given["fillers"] = tuple(int(d) for d in args.fillers.split(","))
    cfg = replace(cfg, **given)
    if args.set:
        cfg = replace(cfg, model={**cfg.model, **common.parse_settings(args.set)})
    if args.long:
        cfg = replace(cfg, fillers=cfg.fillers + (262144,))
    unknown = set(cfg.variants) - set(variants(cfg))
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; known: {sorted(variants(cfg))}")
    return cfg


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    """Run every requested variant; returns the records written."""
    start = time.perf_counter()
    cfg = parse_args(argv)
    deadline = start + cfg.max_seconds if cfg.max_seconds else math.inf
    device = common.pick_device(cfg.device)
    common.setup_precision()
    records: list[dict[str, Any]] = []
    writer = common.JsonlWriter(cfg.out)

    def write(record: dict[str, Any]) -> None:
        records.append(record)
        writer(record)

    command = shlex.join(["python", "bench/passkey.py"] + (sys.argv[1:] if argv is None else list(argv)))
    write(dict(**common.env_record(cfg.impl, device, brt), command=command, config=asdict(cfg)))
    table = variants(cfg)
    for name in cfg.variants:
        if time.perf_counter() + cfg.train_seconds + cfg.eval_reserve > deadline:
            write(dict(case="skipped", impl=cfg.impl, variant=name, reason="would not fit in --max-seconds"))
            continue
        print(f"== {name}", flush=True)
        try:
            run_variant(name, table[name], cfg, device, deadline, write)
        except Exception as error:  # report and go on: one variant must not lose the others
            write(dict(case="error", impl=cfg.impl, variant=name, error=common.describe_error(error)))
        common.free_memory(device)

    env = records[0]
    summary = "\n".join([
        f"Passkey recall (all {KEY_DIGITS} digits) on {env.get('gpu', env['device'])}, torch {env['torch']}",
        f"`{command}`", "", markdown_table(records, cfg)])
    print("\n" + summary)
    Path(cfg.out).with_suffix(".md").write_text(summary + "\n")
    return records


if __name__ == "__main__":
    main()
