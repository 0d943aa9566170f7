"""Speed of `python train.py` as a user runs it, beside its eager path and the seed package's step.

From the repository root, on one GPU (about 5 minutes on an H200, compilation included; the seed's
wheels in .whl/ as for run_gpu.sh — without them the seed is skipped):

    python3 bench/train_py_speed.py                       # prints one JSON line at the end
    python3 bench/train_py_speed.py --device cpu --tiny   # a CPU smoke test of the whole script (~1 min)

1. A corpus of >= 32 MB: the Python sources of this interpreter's standard library and site-packages,
   concatenated in sorted order (repeated if they are fewer; enwik8 is not needed).
2. `train.py --data CORPUS --max-steps 300 --sample-interval 200` with every other flag at its
   default (on a GPU: TrainStep + torch.compile, evaluation every 100 steps, the final pass over
   val and test): tokens/s over steps 100-300 from train.py's own metrics.jsonl (its windows
   exclude evaluation, samples and checkpoints; the compiling first step lies outside them),
   seconds from launch to the end of the first step, the first step's own seconds, and when each
   evaluation and the sample were printed, in seconds since launch (a compiled evaluation would
   pause ~1 min at step 100).
3. The same with `--no-cuda-graph --no-compile` (the eager loop), stopped at step 90 with
   --stop-at-step (no final pass), tokens/s over steps 20-90.
4. The seed package (0.4.4, from .whl/ into /tmp/seed, as run_gpu.sh does): bench/train_speed.py
   --impl seed --cases seed_b4x2048, the same model and micro-batch (4 x 2048; random tokens: the
   content does not change the speed). Its step is one micro-batch and an optimiser step; train.py's
   is 4 micro-batches (grad_accum 4) and one optimiser step.

The JSON line (also appended to --out) holds each part's numbers and the ratios fast / eager and
fast / seed. train.py's output goes to <work-dir>/<run>.log.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
TINY_FLAGS = ["--dim", "32", "--depth", "2", "--heads", "2", "--dim-head", "16", "--max-seq-len", "32",
              "--block-width", "16", "--num-state-vectors", "8", "--recurrent-layers", "2", "--seq-len", "64",
              "--eval-batches", "2", "--eval-streams", "16", "--eval-interval", "4", "--log-interval", "2"]


# ---- arithmetic and parsing (tested on CPU) --------------------------------------------------------


def window_rate(records: list[dict], start: int, end: int) -> Optional[dict[str, Any]]:
    """Tokens/s over the train records' windows that lie within steps (start, end]: all their tokens
    over all their time (each window's time is its tokens over its logged rate), so a window counts
    by its length, not once per record. None when no window lies there."""
    train = sorted((r for r in records if r["kind"] == "train"), key=lambda r: r["step"])
    tokens = seconds = 0.0
    steps = 0
    for before, r in zip([None] + train, train):
        begin = 0 if before is None else before["step"]  # a window runs from the previous record's step
        if begin < start or r["step"] > end:
            continue
        per_step = r["tokens"] / r["step"]
        window_tokens = (r["step"] - begin) * per_step
        tokens += window_tokens
        seconds += window_tokens / r["tokens_per_s"]
        steps += r["step"] - begin
    if not steps:
        return None
    return dict(tok_per_s=round(tokens / seconds), steps=steps, first_step=start + 1, last_step=end,
                seconds=round(seconds, 3))


def read_records(path: Path) -> list[dict]:
    """metrics.jsonl as a list of records."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarise_run(records: list[dict], lines: list[tuple[float, str]], launched_wall: float, start: int,
                  end: int, wall_s: float) -> dict[str, Any]:
    """One train.py run's figures from its metrics and its stdout lines (seconds since launch, text)."""
    out: dict[str, Any] = dict(window=window_rate(records, start, end), wall_s=round(wall_s, 1))
    first = next((r for r in records if r["kind"] == "first_step"), None)
    if first is not None:
        out["first_step_s"] = round(first["seconds"], 2)
        out["to_first_step_s"] = round(first["wall_time"] - launched_wall, 1)
    out["eval_lines_at_s"] = {text.split(":")[0]: round(t, 1) for t, text in lines
                              if text.startswith("step ") and ": val loss" in text}
    out["sample_lines_at_s"] = {text.strip("- ").replace("sample at ", ""): round(t, 1) for t, text in lines
                                if text.startswith("--- sample at step ")}
    for kind in ("val_full", "test_full"):
        full = next((r for r in records if r["kind"] == kind), None)
        if full is not None:
            out[kind + "_bpc"] = round(full["bpc"], 4)
    trained = [r for r in records if r["kind"] == "train"]
    if trained:
        out["last_train_bpc"] = round(trained[-1]["bpc"], 4)
    header = [text for _, text in lines if text.startswith(("device:", "note:", "batch:"))]
    out["printed"] = header
    return out


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return round(a / b, 2) if a and b else None


# ---- the runs ------------------------------------------------------------------------------------


def make_corpus(path: Path, size: int) -> Path:
    """At least `size` bytes of Python source from this interpreter's standard library, then its
    site-packages where that is short (each folder's files sorted, so a machine always makes the
    same file), cycled if they hold fewer."""
    if path.exists() and path.stat().st_size >= size:
        return path
    paths = sysconfig.get_paths()
    roots = list(dict.fromkeys(paths[k] for k in ("stdlib", "purelib", "platlib") if paths.get(k)))
    chunks: list[bytes] = []
    total, seen = 0, []
    while total < size:
        for root in roots:
            files = sorted(glob.glob(os.path.join(root, "**", "*.py"), recursive=True))
            seen += files
            for name in files:
                try:
                    data = Path(name).read_bytes()
                except OSError:
                    continue
                chunks.append(data)
                total += len(data)
                if total >= size:
                    break
            if total >= size:
                break
        if not seen:
            raise SystemExit(f"no .py files under {roots}: pass --corpus")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(chunks))
    return path


def run_train(name: str, flags: list[str], work: Path, env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run train.py with flags, out-dir work/name; stdout lines timestamped (seconds since launch)."""
    out_dir = work / name
    shutil.rmtree(out_dir, ignore_errors=True)
    log_path = work / f"{name}.log"
    command = [sys.executable, "train.py", *flags, "--out-dir", str(out_dir)]
    print(f"== {name}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    lines: list[tuple[float, str]] = []
    launched_wall, launched = time.time(), time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                                   stderr=log, text=True)
        killer = threading.Timer(timeout, process.kill)  # a run past its time is stopped, output or not
        killer.start()
        try:
            assert process.stdout is not None
            for text in process.stdout:
                t = time.perf_counter() - launched
                lines.append((t, text.rstrip("\n")))
                log.write(f"[{t:7.1f} s] {text}")
                print(f"[{name} {t:6.1f} s] {text}", end="", file=sys.stderr, flush=True)
            code = process.wait()
        finally:
            killer.cancel()
    wall = time.perf_counter() - launched
    metrics = out_dir / "metrics.jsonl"
    result: dict[str, Any] = dict(returncode=code, log=str(log_path))
    if code != 0:
        result["error"] = log_path.read_text()[-2000:]
    if metrics.exists():
        result["records"] = read_records(metrics)
    result.update(lines=lines, launched_wall=launched_wall, wall_s=wall)
    return result


def install_wheel(pattern: str, target: Path) -> bool:
    """Install the first wheel matching .whl/pattern into target (pip, or unzip where pip cannot)."""
    wheels = sorted(glob.glob(str(REPO / ".whl" / pattern)))
    if not wheels:
        return False
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--upgrade",
                           "--target", str(target), wheels[0]], capture_output=True)
    if done.returncode != 0:
        with zipfile.ZipFile(wheels[0]) as archive:
            archive.extractall(target)
    return True


def importable(module: str, env: dict[str, str]) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"], cwd="/", env=env,
                          capture_output=True).returncode == 0


def run_seed(work: Path, env: dict[str, str], deps: Path, tiny: bool, device: Optional[str]) -> dict[str, Any]:
    """The seed package's training step through bench/train_speed.py (same model, micro-batch 4 x 2048)."""
    seed_dir = Path(tempfile.gettempdir()) / "seed"
    shutil.rmtree(seed_dir, ignore_errors=True)
    if not install_wheel("block_recurrent_transformer_pytorch-0.4.4-*.whl", seed_dir):
        return dict(skipped="no .whl/block_recurrent_transformer_pytorch-0.4.4-*.whl (see bench/README.md)")
    seed_env = {**env, "PYTHONPATH": os.pathsep.join([str(seed_dir), str(deps)])}
    for module, pattern in (("einops", "einops-*.whl"), ("packaging", "packaging-*.whl")):
        if not importable(module, seed_env):
            install_wheel(pattern, deps)
    out = work / "train_seed.jsonl"
    command = [sys.executable, "bench/train_speed.py", "--impl", "seed", "--out", str(out)]
    command += ["--tiny", "--cases", "tiny_b4x64"] if tiny else ["--cases", "seed_b4x2048"]
    command += ["--device", device] if device else []
    print(f"== seed: {' '.join(command[1:])}", file=sys.stderr, flush=True)
    done = subprocess.run(command, cwd=REPO, env=seed_env, capture_output=True, text=True, timeout=300)
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    case = next((r for r in records if r.get("case") not in (None, "env")), None)
    env_line = next((r for r in records if r.get("case") == "env"), {})
    if case is None or "tok_per_s" not in case:
        return dict(error=(case or {}).get("error") or done.stderr[-2000:])
    return dict(tok_per_s=case["tok_per_s"], case=case["case"], s_per_step=case["s_per_step"],
                module=env_line.get("module"), version=env_line.get("version"))


def git_commit() -> Optional[str]:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip() or None


def gpu_name() -> Optional[str]:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.splitlines()[0].strip() if done.returncode == 0 and done.stdout.strip() else None


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="steps of the default (fast) run")
    parser.add_argument("--from-step", type=int, default=100, help="tokens/s over steps from-step+1 .. steps")
    parser.add_argument("--eager-steps", type=int, default=90, help="steps of the eager run (0: skip it)")
    parser.add_argument("--eager-from-step", type=int, default=20)
    parser.add_argument("--no-seed", action="store_true", help="skip the seed package")
    parser.add_argument("--corpus", default=None, help="a file of bytes to train on (default: made, see above)")
    parser.add_argument("--corpus-mb", type=float, default=32.0)
    parser.add_argument("--work-dir", default="bench_out/train_py_speed", help="corpus, run folders and logs")
    parser.add_argument("--out", default="bench_out/train_py_speed.jsonl", help="the JSON line is appended here")
    parser.add_argument("--device", default=None, help="passed to train.py (default: cuda when available)")
    parser.add_argument("--tiny", action="store_true", help="tiny model, corpus and step counts: a CPU smoke test")
    parser.add_argument("--timeout", type=float, default=420, help="seconds each train.py run may take")
    args = parser.parse_args(argv)
    if args.tiny:  # seconds on a CPU: windows of 2 steps, an evaluation every 4
        args.corpus_mb = min(args.corpus_mb, 0.1)
        args.steps, args.from_step = min(args.steps, 8), min(args.from_step, 4)
        args.eager_steps, args.eager_from_step = min(args.eager_steps, 6), min(args.eager_from_step, 2)
    work = REPO / args.work_dir
    work.mkdir(parents=True, exist_ok=True)

    # our package from this checkout, and beartype from .whl/ where the machine lacks it
    deps = Path(tempfile.gettempdir()) / "train_py_speed_deps"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(deps), str(REPO)])}
    if args.tiny:
        env.setdefault("OMP_NUM_THREADS", "1")  # tiny models run fastest on one thread
    if not importable("beartype", env):
        install_wheel("beartype-*.whl", deps)

    corpus = Path(args.corpus) if args.corpus else make_corpus(work / "corpus.txt", int(args.corpus_mb * 1e6))
    common = ["--data", str(corpus)] + (TINY_FLAGS if args.tiny else []) + (["--device", args.device] if args.device else [])
    result: dict[str, Any] = dict(bench="train_py_speed", commit=git_commit(), gpu=gpu_name(), python=sys.version.split()[0],
                                  corpus=str(corpus), corpus_bytes=corpus.stat().st_size)

    sample_at = args.steps * 2 // 3 // 10 * 10 or 1  # one sample, to see that it does not pause long either
    fast = run_train("default", common + ["--max-steps", str(args.steps), "--sample-interval", str(sample_at)],
                     work, env, args.timeout)
    result["default"] = dict(returncode=fast["returncode"], flags=f"defaults but --sample-interval {sample_at}")
    if "records" in fast:
        result["default"].update(summarise_run(fast["records"], fast["lines"], fast["launched_wall"], args.from_step,
                                               args.steps, fast["wall_s"]))
    if "error" in fast:
        result["default"]["error"] = fast["error"]

    if args.eager_steps:
        eager = run_train("eager", common + ["--no-cuda-graph", "--no-compile", "--max-steps", str(args.steps),
                                             "--stop-at-step", str(args.eager_steps)], work, env, args.timeout)
        result["eager"] = dict(returncode=eager["returncode"], flags="--no-cuda-graph --no-compile")
        if "records" in eager:
            result["eager"].update(summarise_run(eager["records"], eager["lines"], eager["launched_wall"],
                                                 args.eager_from_step, args.eager_steps, eager["wall_s"]))
        if "error" in eager:
            result["eager"]["error"] = eager["error"]

    if not args.no_seed:
        result["seed"] = run_seed(work, env, deps, args.tiny, args.device)

    def rate(part: str) -> Optional[float]:
        found = result.get(part) or {}
        window = found.get("window") if part != "seed" else found
        return (window or {}).get("tok_per_s")

    result["default_over_eager"] = ratio(rate("default"), rate("eager"))
    result["default_over_seed"] = ratio(rate("default"), rate("seed"))
    line = json.dumps(result)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        f.write(line + "\n")
    print(line, flush=True)
    return 0 if fast["returncode"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
