"""Multi-GPU check of train.py: DDP gradients equal single-process gradients, and tokens/s on N vs 1 GPU.

    torchrun --nproc_per_node 2 bench/ddp_check.py --out bench_out/ddp_check.jsonl         # 2 GPUs (nccl)
    torchrun --nproc_per_node 2 bench/ddp_check.py --device cpu --tiny                     # CPU (gloo)
    torchrun --nproc_per_node 2 bench/ddp_check.py --device cpu --tiny --perturb-rank1     # must fail

Any train.py flag may be added (e.g. --batch-size 8 --grad-accum 2 --compile, --data PATH); without
--data the corpus is 1 MB of seeded random bytes, the same on every rank (no download needed).
With train.py's --fsdp the same check applies to FSDP's sharded gradients (bench/fsdp_check.py).

Both parts run train.py's own training loop, train.train(), in this process, not a copy of it: the
DistributedDataParallel wrapping of RecurrentTrainerWrapper, the micro-batches from get_batch, the
loss / grad_accum and the no_sync() accumulation are the lines of train._run. train.py has no
function for "one step through DDP" to call on its own, so the script observes the real loop from
outside with three patches, active only during the gradient check:

  * train.build_model: the model train.py builds is kept (for its weights);
  * train.get_batch: every micro-batch a rank draws is recorded (--perturb-rank1: rank 1 records the
    batch but trains on different bytes, a negative control the check must catch);
  * torch.nn.utils.clip_grad_norm_: train.py calls it right after the last micro-batch's backward,
    i.e. when the gradients are DDP's all-reduced averages of the step and nothing has changed the
    weights yet. The hook copies them and stops the run there. Under --fsdp they are shards
    (DTensors): every rank gathers them whole, and the weights, before rank 0 compares.

1. Gradient check, fp32 (no autocast, TF32 off: train.py's set_float32_matmul_precision("high") is
   suppressed while it runs), memory and state dropout 0, the config's batch size and grad_accum.
   The ranks all-gather their micro-batches; rank 0 then builds a plain (non-DDP) copy of the model
   with the same weights and computes, in one process, the gradient of the same global batch:
   for each micro-step the micro-batches of all ranks concatenated (batch_size * world rows), loss
   / grad_accum, backward, accumulated - a single GPU training with --batch-size batch_size * world.
   For every parameter: max |g_ddp - g_ref| and ||g_ddp - g_ref|| / ||g_ref||; the check passes when
   the largest relative error is at most --rtol (default 1e-5). Exit status 1 when it fails.
2. Speed: train.train on rank 0 alone (WORLD_SIZE=1, the other ranks waiting at a barrier), then
   on all N ranks; the config as given (bf16 autocast and TF32 on CUDA, dropout 0.1), --window steps
   per train.py log record, the first record (warm-up) dropped, the next --windows averaged
   (tokens / time). Tokens/s is train.py's own logged rate (all ranks' tokens). Every rank keeps
   its per-GPU batch, so N GPUs process N times the tokens of one step: ideal scaling is N.
   On CUDA, also peak memory (rank 0) and MFU: model FLOPs per token (common.train_flops_per_token,
   as every bench counts them) x tokens/s per GPU / the card's bf16 matmul rate measured here.

Prints train.py's output on stderr, then on stdout one JSON line (also appended to --out) and a
markdown table: card, torch, world size, tokens/s, ratio to 1 process, MFU, peak memory.
NCCL settings come from the environment (e.g. NCCL_NVLS_ENABLE=0); the script sets none of them
and records NCCL_NVLS_ENABLE.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import common  # noqa: E402  (bench/, first on the path of a script run from there)
import train  # noqa: E402
from block_recurrent_transformer_pytorch import RecurrentTrainerWrapper  # noqa: E402

# tests/test_train.py's tiny model: 2 blocks per segment, 2 segments per sample, every part live
TINY = dict(dim=32, depth=2, heads=2, dim_head=16, max_seq_len=32, block_width=16, num_state_vectors=8,
            recurrent_layers=(2,), seq_len=64, batch_size=4, grad_accum=2)
# flags this script sets itself for each run
OWNED = ("out_dir", "max_steps", "stop_at_step", "log_interval", "eval_interval", "sample_interval",
         "checkpoint_interval", "resume", "eval_only", "device")


class _GradientsTaken(Exception):
    """Raised by the clip hook to end train.py's loop once the step's gradients are copied."""


# ---- command line ------------------------------------------------------------------------------


def parse(argv: Optional[list[str]]) -> tuple[argparse.Namespace, dict[str, Any]]:
    """This script's flags, and the train.py flags passed along with them."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Other flags are train.py's (python train.py --help).")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None,
                        help="cuda (nccl; default when available) or cpu (gloo)")
    parser.add_argument("--out", default=None, metavar="FILE", help="append the JSON record to this file")
    parser.add_argument("--tiny", action="store_true", help="a tiny model and batch (CPU smoke test)")
    parser.add_argument("--perturb-rank1", action="store_true",
                        help="negative control: rank 1 trains on other bytes than it reports; the check must fail")
    parser.add_argument("--rtol", type=float, default=1e-5,
                        help="largest per-parameter relative error ||g_ddp - g_ref|| / ||g_ref|| that passes")
    parser.add_argument("--window", type=int, default=None,
                        help="optimizer steps per timed window (default 5 on CUDA, 2 on CPU)")
    parser.add_argument("--windows", type=int, default=None,
                        help="timed windows after the warm-up window (default 3 on CUDA, 2 on CPU)")
    parser.add_argument("--data-bytes", type=int, default=1_000_000,
                        help="size of the random corpus used when --data is not given")
    parser.add_argument("--no-check", action="store_true", help="skip the gradient check")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed measurement")
    parser.add_argument("--no-single", action="store_true",
                        help="measure the speed on all processes only, not on one first (no scaling ratio): "
                             "half the time where compiling the model dominates a run")
    args, rest = parser.parse_known_args(argv)
    passed = train.parse_args(rest)
    owned = sorted(set(passed) & set(OWNED))
    if owned:
        names = ", ".join("--" + k.replace("_", "-") for k in owned)
        parser.error(f"these train.py flags are set by the script: {names}")
    return args, passed


# ---- gradient check ----------------------------------------------------------------------------


def gather(x: torch.Tensor, world: int) -> list[torch.Tensor]:
    """x of every rank, in rank order."""
    if world == 1:
        return [x]
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    return parts


def check_gradients(cfg: train.TrainConfig, env: train.DistEnv, args: argparse.Namespace) -> dict[str, Any]:
    """One fp32 step of train.train through DDP, compared with one process on the same global batch."""
    cfg = replace(cfg, amp=False, xl_memories_dropout=0.0, state_dropout=0.0, max_steps=1, log_interval=1)
    real_build, real_get_batch = train.build_model, train.get_batch
    models: list[torch.nn.Module] = []
    batches: list[torch.Tensor] = []
    result: dict[str, Any] = {}

    def build_model(c: train.TrainConfig):
        model = real_build(c)
        models.append(model)
        return model

    def get_batch(*a, **k) -> torch.Tensor:
        x = real_get_batch(*a, **k)
        batches.append(x)
        if args.perturb_rank1 and env.rank == 1:
            return (x + 1) % cfg.num_tokens  # trains on other bytes than the ones it reports
        return x

    def clip_hook(parameters, *a, **k):
        params = list(parameters)
        # every rank: FSDP's shards are gathered whole (collectives), with the weights they belong to
        ddp_grads = [None if p.grad is None else train.whole_tensor(p.grad.detach()).clone() for p in params]
        weights = train.gathered(models[0].state_dict(), env.is_main)
        result.update(compare(cfg, env, models[0], weights, params, ddp_grads, batches, args.rtol, real_build))
        raise _GradientsTaken

    precision = torch.get_float32_matmul_precision()
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False
    try:
        with mock.patch.object(train, "build_model", build_model), \
                mock.patch.object(train, "get_batch", get_batch), \
                mock.patch.object(torch.nn.utils, "clip_grad_norm_", clip_hook), \
                mock.patch.object(torch, "set_float32_matmul_precision", lambda *_: None):
            try:
                train.train(cfg)
            except _GradientsTaken:
                pass
            else:
                raise RuntimeError("train.train finished without calling clip_grad_norm_: the gradient hook "
                                   "never ran (has train.py's training step changed?)")
    finally:
        torch.set_float32_matmul_precision(precision)
        torch.backends.cudnn.allow_tf32 = cudnn_tf32
    return result


def compare(cfg: train.TrainConfig, env: train.DistEnv, live: torch.nn.Module, weights: dict[str, Any],
            params: list[torch.nn.Parameter], ddp_grads: list[Optional[torch.Tensor]], batches: list[torch.Tensor],
            rtol: float, build_model) -> dict[str, Any]:
    """Rank 0's comparison of the all-reduced gradients with a single-process run; the verdict on every rank."""
    if len(batches) != cfg.grad_accum:
        raise RuntimeError(f"train.py drew {len(batches)} micro-batches for one step, expected {cfg.grad_accum}")
    # batches drawn on the CPU (--cuda-graph passes them to TrainStep from there) travel to the
    # device first: NCCL gathers device tensors only
    device = params[0].device
    gathered = [gather(x.to(device), env.world_size) for x in batches]  # [micro][rank]
    report: list[Any] = [None]
    if env.is_main:
        report[0] = reference_comparison(cfg, live, weights, params, ddp_grads, gathered, rtol, build_model)
    if env.world_size > 1:
        dist.broadcast_object_list(report, src=0)
    return report[0]


def reference_comparison(cfg: train.TrainConfig, live: torch.nn.Module, weights: dict[str, Any],
                         params: list[torch.nn.Parameter], ddp_grads: list[Optional[torch.Tensor]],
                         gathered: list[list[torch.Tensor]], rtol: float, build_model) -> dict[str, Any]:
    """The gradient of the global batch in this process, without DDP, against the DDP gradients;
    weights: the live model's, whole."""
    device = params[0].device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        reference = build_model(cfg).to(device)  # train.build_model, unpatched; weights loaded next
    reference.load_state_dict(weights)
    named = list(reference.named_parameters())
    live_params = list(live.parameters())
    if len(named) != len(params) or any(p is not q for p, q in zip(params, live_params)):
        raise RuntimeError("the parameters train.py clipped are not the model's parameters, in order")
    wrapper = RecurrentTrainerWrapper(reference, 0.0, 0.0, bptt_segments=cfg.bptt_segments).train()
    loss_total = 0.0
    for parts in gathered:  # one micro-step: all ranks' micro-batches as one batch
        with train.autocast(cfg, device):
            loss = wrapper(torch.cat(parts)) / cfg.grad_accum
        loss.backward()
        loss_total += loss.item()

    rows, diff_sq, ref_sq, max_abs = [], 0.0, 0.0, 0.0
    for (name, ref_p), got in zip(named, ddp_grads):
        ref = torch.zeros_like(ref_p) if ref_p.grad is None else ref_p.grad.detach()
        got = torch.zeros_like(ref) if got is None else got
        if got.shape != ref.shape:
            raise RuntimeError(f"{name}: gradient shape {tuple(got.shape)} != {tuple(ref.shape)}")
        d = (got.double() - ref.double())
        d_norm, r_norm = d.norm().item(), ref.double().norm().item()
        rel = d_norm / r_norm if r_norm > 0 else (0.0 if d_norm == 0 else math.inf)
        rows.append(dict(param=name, numel=ref.numel(), max_abs_diff=d.abs().max().item(), rel_err=rel,
                         grad_norm=r_norm))
        diff_sq, ref_sq = diff_sq + d_norm ** 2, ref_sq + r_norm ** 2
        max_abs = max(max_abs, rows[-1]["max_abs_diff"])
    rows.sort(key=lambda r: -r["rel_err"])
    worst = rows[0]
    return dict(
        passed=bool(worst["rel_err"] <= rtol), rtol=rtol,
        max_rel_err=worst["rel_err"], worst_param=worst["param"], max_abs_diff=max_abs,
        global_rel_err=math.sqrt(diff_sq / ref_sq) if ref_sq > 0 else math.inf,
        grad_norm=math.sqrt(ref_sq), reference_loss=loss_total, params=len(rows),
        zero_grad_params=sum(r["grad_norm"] == 0 for r in rows),
        global_batch=[len(parts) * parts[0].shape[0] for parts in gathered][0], micro_batch=gathered[0][0].shape[0],
        grad_accum=cfg.grad_accum, seq_len=cfg.seq_len, precision="fp32, TF32 off, no autocast",
        worst5=[{k: (round(v, 12) if isinstance(v, float) else v) for k, v in r.items()} for r in rows[:5]],
    )


# ---- speed -------------------------------------------------------------------------------------


def measure_speed(cfg: train.TrainConfig, env: train.DistEnv, window: int, windows: int) -> Optional[dict[str, Any]]:
    """train.train for (1 + windows) * window steps; tokens/s over the windows after the first (rank 0)."""
    steps = window * (1 + windows)
    with tempfile.TemporaryDirectory(prefix="ddp_check_speed_") as tmp:
        run = replace(cfg, out_dir=str(Path(tmp) / "run"), max_steps=steps, stop_at_step=steps, log_interval=window)
        if env.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(env.device)
        # no checkpoint and no final weights: at 1.3B parameters train.py's ckpt.pt (weights and
        # optimizer state, ~21 GB) takes longer to write than the timed steps take to run
        skip = lambda *args, **kwargs: None  # noqa: E731
        with mock.patch.object(train, "save_checkpoint", skip), mock.patch.object(train, "save_final", skip):
            train.train(run)
        if not env.is_main:
            return None
        records = [json.loads(line) for line in (Path(run.out_dir) / train.METRICS).read_text().splitlines()]
    records = [r for r in records if r["kind"] == "train"]
    world = env.world_size
    tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum * world
    timed = records[1:]
    seconds = sum(tokens_per_step * window / r["tokens_per_s"] for r in timed)
    return dict(world_size=world, tokens_per_s=tokens_per_step * window * len(timed) / seconds,
                window_tokens_per_s=[round(r["tokens_per_s"], 1) for r in records],
                tokens_per_step=tokens_per_step, steps=steps, timed_steps=window * len(timed),
                peak_gib=round(torch.cuda.max_memory_allocated(env.device) / 2 ** 30, 3)
                if env.device.type == "cuda" else None,
                final_train_bpc=records[-1]["bpc"])


@contextlib.contextmanager
def single_process_env():
    """Make train.setup_distributed see a job of one process (this one) while the group stays up."""
    saved = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK=saved["LOCAL_RANK"] or "0")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---- output ------------------------------------------------------------------------------------


def nccl_version() -> Optional[str]:
    try:
        version = torch.cuda.nccl.version()
    except Exception:  # a build without NCCL
        return None
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def table(record: dict[str, Any]) -> str:
    """The record as a markdown table of speeds and a line on the gradient check."""
    lines = []
    speed = record.get("speed")
    if speed:
        lines += ["| card | torch | world size | tokens/s | ratio to 1 | MFU | peak GiB |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        runs = (speed["one"], speed["all"]) if record["world_size"] > 1 else (speed["all"],)
        for run in (run for run in runs if run is not None):
            ratio = "-" if speed["one"] is None else f"{run['tokens_per_s'] / speed['one']['tokens_per_s']:.2f}x"
            mfu = "-" if run["mfu"] is None else f"{run['mfu']:.1%}"
            lines.append(f"| {record['card']} | {record['torch']} | {run['world_size']} | "
                         f"{run['tokens_per_s']:,.0f} | {ratio} | {mfu} | {run['peak_gib'] or '-'} |")
        scaling = ("not measured (--no-single)" if speed["ratio"] is None else
                   f"{speed['ratio']:.2f}x on {record['world_size']} processes (efficiency {speed['efficiency']:.0%})")
        lines.append(f"\nscaling {scaling}, per-process batch {speed['per_process_batch']}")
    check = record.get("check")
    if check:
        lines.append(f"gradient check ({check['precision']}, global batch {check['global_batch']} x "
                     f"{check['seq_len']} tokens x {check['grad_accum']} accumulation, {record['world_size']} "
                     f"processes vs 1): {'PASSED' if check['passed'] else 'FAILED'}: max relative error "
                     f"{check['max_rel_err']:.3g} ({check['worst_param']}) vs rtol {check['rtol']:g}, "
                     f"max abs diff {check['max_abs_diff']:.3g}, global relative error "
                     f"{check['global_rel_err']:.3g}, {check['params']} parameters")
    return "\n".join(lines)


# ---- main --------------------------------------------------------------------------------------


def model_size(cfg: train.TrainConfig) -> tuple[int, float]:
    """The parameters of cfg's model and its training FLOPs per token (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = train.build_model(cfg)
    return sum(p.numel() for p in model.parameters()), common.train_flops_per_token(model.config.to_dict())


def add_mfu(run: dict[str, Any], flops_per_token: float, matmul_tflops: Optional[float]) -> None:
    """run's model-FLOP utilisation per GPU (None without a measured matmul rate, i.e. on a CPU)."""
    achieved = run["tokens_per_s"] / run["world_size"] * flops_per_token / 1e12
    run["mfu"] = None if matmul_tflops is None else common.round_sig(achieved / matmul_tflops)


def main(argv: Optional[list[str]] = None, bench: str = "ddp_check") -> int:
    """Run the check and the speed measurement as argv says (see the module docstring); bench labels
    the record. 0 when the check passed or did not run, 1 when it failed."""
    args, passed = parse(argv)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device == "cuda"
    window = args.window or (5 if cuda else 2)
    windows = args.windows or (3 if cuda else 2)
    env = train.setup_distributed(device)  # joins the torchrun job (nccl on CUDA, gloo on CPU)
    world, is_main = env.world_size, env.is_main
    if args.perturb_rank1 and world < 2 and is_main:
        print("warning: --perturb-rank1 has no effect with one process", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="ddp_check_") as tmp:
        base = dict(TINY) if args.tiny else {}
        base.update(passed, device=device, out_dir=str(Path(tmp) / "unused"), eval_interval=0,
                    sample_interval=0, checkpoint_interval=0)
        if base.get("data") is None:  # the same seeded random bytes on every rank
            data = Path(tmp) / "random.bin"
            generator = torch.Generator().manual_seed(0)
            data.write_bytes(bytes(torch.randint(0, 256, (args.data_bytes,), generator=generator).tolist()))
            base["data"] = str(data)
        cfg = train.TrainConfig(**base)
        params, flops_per_token = model_size(cfg)
        record: dict[str, Any] = dict(
            bench=bench, card=torch.cuda.get_device_name(env.device) if cuda else "cpu",
            torch=torch.__version__, cuda=torch.version.cuda if cuda else None,
            nccl=nccl_version() if cuda else None,
            backend=dist.get_backend() if world > 1 else None, world_size=world, device=device,
            nccl_nvls_enable=os.environ.get("NCCL_NVLS_ENABLE"), perturb_rank1=args.perturb_rank1,
            model=dict(dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, dim_head=cfg.dim_head, kv_heads=cfg.kv_heads,
                       ff_mult=cfg.ff_mult, max_seq_len=cfg.max_seq_len, block_width=cfg.block_width,
                       num_state_vectors=cfg.num_state_vectors, recurrent_layers=None if cfg.recurrent_layers is None else list(cfg.recurrent_layers),
                       parameters=params, train_flops_per_token=round(flops_per_token)),
            fsdp=cfg.fsdp, activation_checkpointing=cfg.activation_checkpointing,
            batch_size=cfg.batch_size, seq_len=cfg.seq_len, grad_accum=cfg.grad_accum,
            data=passed.get("data", f"{args.data_bytes:,} random bytes"),
            train_flags={k: list(v) if isinstance(v, tuple) else v for k, v in passed.items()},
        )
        # train.py's prints and progress bars go to stderr; stdout holds the results
        with contextlib.redirect_stdout(sys.stderr):
            if not args.no_check:
                record["check"] = check_gradients(replace(cfg, out_dir=str(Path(tmp) / "check")), env, args)
                gc.collect()
                if cuda:
                    torch.cuda.empty_cache()
                if world > 1:
                    dist.barrier()
            if not args.no_speed:
                one = matmul_tflops = None
                if is_main and cuda:  # the card's bf16 matmul rate, MFU's denominator
                    matmul_tflops = record["matmul_tflops"] = common.round_sig(common.matmul_tflops(env.device))
                    # in the log at once: a run stopped by a time limit still leaves MFU's denominator
                    print(f"bf16 matmul rate of {record['card']}: {matmul_tflops} TFLOP/s", file=sys.stderr, flush=True)
                if is_main and not (args.no_single and world > 1):  # one process first; the others wait
                    with single_process_env():
                        one = measure_speed(cfg, replace(env, world_size=1), window, windows)
                    torch._dynamo.reset()  # compiled code may hold the first run's model: free it for the next
                    gc.collect()
                    if cuda:
                        torch.cuda.empty_cache()
                if world > 1:
                    dist.barrier()
                    every = measure_speed(cfg, env, window, windows)
                else:
                    every = one
                if is_main:
                    for run in (one, every):
                        if run is not None:
                            add_mfu(run, flops_per_token, matmul_tflops)
                    ratio = None if one is None else every["tokens_per_s"] / one["tokens_per_s"]
                    record["speed"] = dict(one=one, all=every, ratio=ratio,
                                           efficiency=None if ratio is None else ratio / world,
                                           per_process_batch=f"{cfg.batch_size} x {cfg.seq_len} x {cfg.grad_accum}",
                                           amp=cfg.amp and cuda, window=window, windows=windows)
    if world > 1:
        dist.barrier()  # no rank tears the group down while another's gloo work is in flight (it aborted)
        dist.destroy_process_group()
    ok = record.get("check", {}).get("passed", True)
    if is_main:
        line = json.dumps(record)
        print(line, flush=True)
        print(table(record), flush=True)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            with open(args.out, "a") as f:
                f.write(line + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
