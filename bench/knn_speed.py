"""Speed of exact kNN memory (issue 16): a training step with and without a kNN layer, a passkey
trial's evaluation far back, and peak memory.

On bench/passkey.py's model (dim 384, 4 layers, blocks of 256, segments of 512), its "knn" variant
putting a kNN layer on top (262,144 entries, top 32); bf16 autocast on CUDA:

- train: training steps at batch 32 (forward and backward segment by segment, memories carried
  detached, clipping, AdamW) of three models: "knn" (layer 4 a kNN layer), "plain" (layer 4 plain)
  and "plain5" (a fifth, plain layer on top). plain5 - plain is a plain layer's time, so the kNN
  layer costs that plus knn - plain: ``knn_layer_ratio`` = (plain5 - plain + knn - plain) / (plain5 - plain).
  Two stores: "empty" (passkey training at its full D: samples of 5 segments from empty memories,
  the store filling to ~2,300 of its 262,144 entries) and "full" (one segment per step, carrying
  memories whose store is full: every query searches all 262,144 entries).
- eval: bench/passkey.py's evaluate() at D = 64k and 256k, seconds per trial (an untrained model:
  the time does not depend on the weights).
- peak: peak memory of passkey training steps at the largest batch its curriculum makes (160
  samples of one segment); the "empty" training steps above are its other end (32 x 5 segments).
- profile (--profile, CUDA): the kernels of one evaluation segment (evaluation batch, full store) and
  of one training step of each model from each store ("empty", "full"), and knn_layer_ratio by kernel
  time (the GPU's work, without the host's launch overhead). On CUDA the
  exact search runs the fused Triton kernels of knn_kernels (knn_group_maxima_kernel,
  knn_member_scores_kernel; category "knn search") where Triton imports, else the torch path (its
  matmuls and top-k kernels): the kernel names tell which ran.

    PYTHONPATH=/tmp/site:$PWD python3 bench/knn_speed.py --profile --out bench_out/knn_speed.jsonl
    python bench/knn_speed.py --device cpu --tiny          # a smoke test without a GPU

Writes one JSON line per record (an "env" line first) and the markdown table beside the JSONL (.md).
Only the model's public API is used (and ``Memories.knn.write``), so the same script measures older
commits too.
"""

from __future__ import annotations

import random
import shlex
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

import common
import passkey

import block_recurrent_transformer_pytorch as brt

MODELS = ("plain", "plain5", "knn")


@dataclass
class Config:
    """Every setting of a run (--tiny overrides some, see TINY)."""

    model: dict[str, Any] = field(default_factory=lambda: dict(passkey.MODEL))
    memory_size: int = 1024 * passkey.MODEL["block_width"]  # the passkey "knn" variant's store
    variant: str = "knn"  # the passkey variant whose kNN layer the "knn" model takes (query_routed, routed)
    cases: tuple[str, ...] = ("train", "eval", "peak")
    batch: int = 32
    train_filler: int = 2048  # D of the "empty" training samples (passkey's full training D)
    warmup: int = 2
    steps: int = 5
    fillers: tuple[int, ...] = (65536, 262144)
    trials: int = 50
    eval_batch: int = 50  # passkey.py's
    peak_batch: int = 160  # passkey training's largest batch: batch_size x 5 one-segment samples
    profile: bool = False
    device: Optional[str] = None
    out: str = "bench_out/knn_speed.jsonl"
    impl: str = "ours"


TINY = dict(model=passkey.TINY_MODEL, memory_size=64 * passkey.TINY_MODEL["block_width"], batch=4, train_filler=96,
            warmup=1, steps=2, fillers=(1024, 4096), trials=4, eval_batch=4, peak_batch=8,
            out="bench_out/knn_speed_tiny.jsonl")


def build(cfg: Config, name: str, device: torch.device) -> brt.BlockRecurrentTransformer:
    """One of MODELS, seeded: ``knn`` with the kNN layer of passkey variant ``cfg.variant`` on top,
    ``plain5`` one plain layer more."""
    kwargs = dict(cfg.model)
    if name == "knn":
        layer = passkey.variants(passkey.Config(model=kwargs))[cfg.variant].model
        kwargs.update(layer, knn_memory_size=cfg.memory_size)
    elif name == "plain5":
        kwargs["depth"] += 1
    torch.manual_seed(0)
    return brt.BlockRecurrentTransformer(**kwargs).to(device)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
               memories: Optional[brt.Memories], device: torch.device) -> brt.Memories:
    """Forward and backward over x (b, k * max_seq_len + 1) segment by segment from ``memories``
    (next-token loss, the graph cut at each segment), then clipping and AdamW; the memories after it."""
    seq_len, states = model.max_seq_len, None
    for start in range(0, x.shape[1] - 1, seq_len):
        with passkey.autocast(device):
            logits, memories, states = model(x[:, start:start + seq_len], xl_memories=memories, states=states)
            loss = F.cross_entropy(logits.flatten(0, 1), x[:, start + 1:start + seq_len + 1].flatten())
        loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return memories


def filled_memories(model: brt.BlockRecurrentTransformer, batch: int, device: torch.device) -> brt.Memories:
    """The memories after one segment, their kNN store (if any) then filled to capacity with random unit keys."""
    with torch.no_grad(), passkey.autocast(device):
        _, memories, _ = model(torch.randint(0, passkey.NUM_TOKENS, (batch, model.max_seq_len), device=device))
    config, store = model.config, memories.knn
    if store is None:
        return memories
    shape = (len(config.knn_layers), batch, config.kv_heads, config.block_width, config.dim_head)
    for _ in range(config.knn_memory_size // config.block_width):
        store = store.write(torch.randn(shape, device=device), torch.randn(shape, device=device))
    return replace(memories, knn=store)


def training(cfg: Config, name: str, store: str, device: torch.device) -> tuple[Callable[[], Any], int]:
    """One training step of model ``name`` at cfg.batch, as a function to call repeatedly, and its
    segments: "empty" (a passkey sample at D = train_filler per row, from no memories) or "full"
    (one segment per step, from a full store on, the memories carried from step to step)."""
    model = build(cfg, name, device).train()
    optimizer = passkey.make_optimizer(model, passkey.Config(), device)
    if store == "empty":
        length = passkey.sample_length(cfg.train_filler, model.max_seq_len)
        x = passkey.make_batch([cfg.train_filler] * cfg.batch, length, random.Random(0)).to(device)
        step: Callable[[], Any] = lambda: train_step(model, optimizer, x, None, device)
    else:
        x = torch.randint(0, passkey.NUM_TOKENS, (cfg.batch, model.max_seq_len + 1), device=device)
        carried = [filled_memories(model, cfg.batch, device)]  # carried from step to step, as a training loop does
        step = lambda: carried.append(train_step(model, optimizer, x, carried.pop(), device))
    return step, (x.shape[1] - 1) // model.max_seq_len


def time_training(cfg: Config, name: str, store: str, device: torch.device) -> dict[str, Any]:
    """Seconds per training step of model ``name`` at cfg.batch from an "empty" or "full" store (``training``)."""
    step, segments = training(cfg, name, store, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(cfg.warmup):
        step()
    common.synchronize(device)
    times = sorted(common.time_each(step, cfg.steps, device))
    return dict(segments=segments, s_per_step=common.round_sig(times[len(times) // 2]),
                s_per_step_min=common.round_sig(times[0]), peak_gib=common.peak_gib(device))


def knn_layer_ratio(seconds: dict[str, float]) -> Optional[float]:
    """A kNN layer's time over a plain layer's, from the step times of MODELS (see the module docstring)."""
    plain_layer = seconds["plain5"] - seconds["plain"]
    if plain_layer <= 0:  # timing noise larger than a layer: no estimate
        return None
    return common.round_sig((plain_layer + seconds["knn"] - seconds["plain"]) / plain_layer, 3)


def run_training(cfg: Config, device: torch.device, write: Callable[[dict[str, Any]], None]) -> None:
    """The "train" case: MODELS x the two stores, then the ratio per store."""
    for store in ("empty", "full"):
        seconds = {}
        for name in MODELS:
            record = dict(case="train", store=store, model=name, batch=cfg.batch)
            try:
                record.update(time_training(cfg, name, store, device))
                seconds[name] = record["s_per_step"]
            except Exception as error:  # report and go on: one OOM must not lose the other cases
                record["error"] = common.describe_error(error)
            write(record)
            common.free_memory(device)
        if len(seconds) == len(MODELS):
            write(dict(case="train_ratio", store=store, batch=cfg.batch, knn_layer_ratio=knn_layer_ratio(seconds)))


def run_evaluation(cfg: Config, device: torch.device, write: Callable[[dict[str, Any]], None]) -> None:
    """The "eval" case: passkey trials at each D, untrained kNN model."""
    model = build(cfg, "knn", device).eval()
    for filler in cfg.fillers:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        result = passkey.evaluate(model, filler, cfg.trials, cfg.eval_batch, 0, device)
        write(dict(case="eval", filler=filler, trials=result["trials"], batch=cfg.eval_batch,
                   seconds=result["seconds"], s_per_trial=common.round_sig(result["seconds"] / result["trials"]),
                   peak_gib=common.peak_gib(device)))


def run_peak(cfg: Config, device: torch.device, write: Callable[[dict[str, Any]], None]) -> None:
    """The "peak" case: two passkey training steps of the kNN model at the curriculum's largest batch."""
    model = build(cfg, "knn", device).train()
    settings = passkey.Config()
    optimizer = passkey.make_optimizer(model, settings, device)
    batch = passkey.make_batch([0] * cfg.peak_batch, passkey.sample_length(0, model.max_seq_len), random.Random(0))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(2):
        passkey.train_step(model, batch.to(device), settings, device)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    common.synchronize(device)
    write(dict(case="peak", batch=cfg.peak_batch, segments=1, peak_gib=common.peak_gib(device)))


def kernels(fn: Callable[[], Any], device: torch.device) -> tuple[dict[str, Any], list[str]]:
    """The GPU kernels of one call of fn (after a warm-up call): totals and the 15 longest."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    common.synchronize(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        common.synchronize(device)
    return common.kernel_summary(prof, top=15)


def evaluation_segment(cfg: Config, device: torch.device) -> Callable[[], None]:
    """One evaluation segment of the kNN model over a full store at the evaluation batch, as a
    function to call repeatedly (the memories carried on, as an evaluation does)."""
    model = build(cfg, "knn", device).eval()
    carried = [filled_memories(model, cfg.eval_batch, device)]
    x = torch.randint(0, passkey.NUM_TOKENS, (cfg.eval_batch, model.max_seq_len), device=device)

    def segment() -> None:
        with torch.no_grad(), passkey.autocast(device):
            carried.append(model(x, xl_memories=carried.pop())[1])

    return segment


def run_profile(cfg: Config, device: torch.device, write: Callable[[dict[str, Any]], None]) -> None:
    """The kernels of one evaluation segment over a full store, and of one training step of each of
    MODELS from each store ("empty", "full": every query searches the whole store), then the kNN
    layer's ratio to a plain layer by kernel time (CUDA). Kernel time is the GPU's work alone: the
    step times of the "train" case also hold the host's launch overhead, which at this model's size
    is most of a plain layer's time."""
    totals, lines = kernels(evaluation_segment(cfg, device), device)
    write(dict(case="profile", what="eval segment, full store", batch=cfg.eval_batch, **totals))
    print("-- the longest kernels of the eval segment, full store:\n" + "\n".join(lines))
    common.free_memory(device)
    for store in ("empty", "full"):
        kernel_seconds = {}
        for name in MODELS:  # each model (and its store) made in turn, then freed
            what = f"train step, {store} store, {name}"
            totals, lines = kernels(training(cfg, name, store, device)[0], device)
            kernel_seconds[name] = totals["kernel_ms"] / 1e3
            write(dict(case="profile", what=what, batch=cfg.batch, **totals))
            print(f"-- the longest kernels of the {what}:\n" + "\n".join(lines))
            common.free_memory(device)
        write(dict(case="profile_ratio", store=store, batch=cfg.batch, knn_layer_ratio=knn_layer_ratio(kernel_seconds)))


def markdown_table(records: list[dict[str, Any]]) -> str:
    """One line per measurement."""
    lines = ["| case | store / D | model | batch | seconds | kNN layer / plain layer | peak GiB |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in records:
        peak = "-" if r.get("peak_gib") is None else r["peak_gib"]  # None off CUDA
        if r.get("error"):
            lines.append(f"| {r['case']} | {r.get('store', '')} | {r.get('model', '')} | {r.get('batch', '')} | "
                         f"{r['error']} | | |")
        elif r["case"] == "train":
            lines.append(f"| train | {r['store']} | {r['model']} | {r['batch']} x {r['segments']} segments | "
                         f"{r['s_per_step']} per step | | {peak} |")
        elif r["case"] == "train_ratio":
            lines.append(f"| train | {r['store']} | | {r['batch']} | | **{r['knn_layer_ratio']}** | |")
        elif r["case"] == "profile_ratio":
            lines.append(f"| profile: train, by kernel time | {r['store']} | | {r['batch']} | | "
                         f"**{r['knn_layer_ratio']}** | |")
        elif r["case"] == "eval":
            lines.append(f"| passkey eval | D = {passkey.short_length(r['filler'])} | knn | {r['batch']} | "
                         f"{r['seconds']} for {r['trials']} trials: **{r['s_per_trial']} per trial** | | {peak} |")
        elif r["case"] == "peak":
            lines.append(f"| passkey training | D = 0 | knn | {r['batch']} x 1 segment | | | **{peak}** |")
        elif r["case"] == "profile":
            lines.append(f"| profile: {r['what']} | | | {r['batch']} | {r['kernel_ms']} ms of {r['kernels']} kernels "
                         f"| | |")
    return "\n".join(lines)


def parse_args(argv: Optional[list[str]]) -> Config:
    """Flags override the defaults (or the --tiny defaults) of Config."""
    parser = common.base_parser(__doc__)
    defaults = Config()
    parser.add_argument("--cases", help=f"comma-separated subset of {','.join(defaults.cases)}")
    parser.add_argument("--batch", type=int, help=f"training batch ({defaults.batch})")
    parser.add_argument("--memory-size", type=int, help=f"kNN store entries ({defaults.memory_size})")
    parser.add_argument("--variant", choices=("knn", "query_routed", "routed"),
                        help=f"bench/passkey.py variant whose kNN layer is measured ({defaults.variant})")
    parser.add_argument("--fillers", help="comma-separated evaluation D (65536,262144)")
    parser.add_argument("--trials", type=int, help=f"passkey trials per D ({defaults.trials})")
    parser.add_argument("--eval-batch", type=int, help=f"evaluation batch ({defaults.eval_batch})")
    parser.add_argument("--peak-batch", type=int, help=f"batch of the peak-memory steps ({defaults.peak_batch})")
    parser.add_argument("--steps", type=int, help=f"timed training steps ({defaults.steps})")
    parser.add_argument("--profile", action="store_true", help="also profile an evaluation segment's kernels (CUDA)")
    args = parser.parse_args(argv)
    cfg = replace(defaults, **TINY) if args.tiny else defaults
    given = {f: getattr(args, f) for f in ("batch", "memory_size", "variant", "trials", "eval_batch", "peak_batch",
                                           "steps", "device", "out", "impl") if getattr(args, f) is not None}
    if args.cases:
        given["cases"] = tuple(c.strip() for c in args.cases.split(",") if c.strip())
    if args.fillers:
        given["fillers"] = tuple(int(d) for d in args.fillers.split(","))
    cfg = replace(cfg, profile=args.profile, **given)
    unknown = set(cfg.cases) - set(defaults.cases)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; known: {list(defaults.cases)}")
    if cfg.memory_size % cfg.model["block_width"] != 0:
        parser.error(f"--memory-size must be a multiple of block_width {cfg.model['block_width']}, got {cfg.memory_size}")
    return cfg


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    """Run the cases asked for; returns the records written."""
    cfg = parse_args(argv)
    device = common.pick_device(cfg.device)
    common.setup_precision()
    records: list[dict[str, Any]] = []
    writer = common.JsonlWriter(cfg.out)

    def write(record: dict[str, Any]) -> None:
        records.append(dict(impl=cfg.impl, **record))
        writer(records[-1])

    command = shlex.join(["python", "bench/knn_speed.py"] + (sys.argv[1:] if argv is None else list(argv)))
    env = common.env_record(cfg.impl, device, brt)
    writer(dict(**env, command=command, config=asdict(cfg)))
    runs = dict(train=run_training, eval=run_evaluation, peak=run_peak, profile=run_profile)
    for case in cfg.cases + (("profile",) if cfg.profile and device.type == "cuda" else ()):
        print(f"== {case}", flush=True)
        try:
            runs[case](cfg, device, write)
        except Exception as error:  # report and go on: one case must not lose the others
            write(dict(case=case, error=common.describe_error(error)))
        common.free_memory(device)
    summary = (f"kNN speed on {env.get('gpu', env['device'])}, torch {env['torch']}\n`{command}`\n\n"
               f"{markdown_table(records)}")
    print("\n" + summary)
    Path(cfg.out).with_suffix(".md").write_text(summary + "\n")
    return records


if __name__ == "__main__":
    main()
