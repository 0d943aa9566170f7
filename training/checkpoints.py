"""What a run leaves on disk: checkpoints (written atomically, with every random stream) and the
metrics log with its plot."""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional

import matplotlib

matplotlib.use("Agg")  # write PNGs without a display (servers, clusters)
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from .config import TrainError  # noqa: E402

CHECKPOINT = "ckpt.pt"
METRICS = "metrics.jsonl"
PLOT = "bpc.png"


def write_atomically(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Replace path by what write puts in a file: a crash at any moment leaves either the old or the new file.

    The bytes go to a temporary file in the same directory (same filesystem, so the rename is
    atomic), are forced to disk, and only then replace path.
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_checkpoint(state: dict, path: Path) -> None:
    """Write a checkpoint atomically (write_atomically)."""
    write_atomically(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path, mmap: bool = False) -> dict:
    """A checkpoint written by save_checkpoint, with a clear error if it is missing or damaged.

    mmap reads tensors only when touched: cheap when only the config is wanted.
    """
    if not path.is_file():
        raise TrainError(f"no checkpoint at {path}: train first, or point --out-dir at the run's directory")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # unpickling raises many types
        raise TrainError(f"{path}: cannot load the checkpoint ({error})") from None


def rng_state(data_generator: Optional[torch.Generator] = None) -> dict:
    """Every random stream this process draws from: data sampling (where a generator draws the batches),
    python (memory/state dropout), torch."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if data_generator is not None:
        state["data"] = data_generator.get_state()
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict, data_generator: Optional[torch.Generator] = None) -> None:
    """Restore what rng_state saved (with the data generator it was given, if any)."""
    if data_generator is not None:
        data_generator.set_state(state["data"])
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def seed_rngs(seed: int, data_generator: torch.Generator) -> None:
    """Seed every random stream of this process."""
    data_generator.manual_seed(seed)
    random.seed(seed)
    torch.manual_seed(seed)


def read_records(path: Path) -> list[dict]:
    """The records of a metrics.jsonl. A torn last line (the run was killed while appending it) is
    skipped with a warning; a damaged line before it is an error."""
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise TrainError(f"{path}: line {number} is not a JSON record; repair or delete the file") from None
            print(f"warning: {path}: skipped its torn last line {line[:60]!r} (the run was killed while writing it)",
                  file=sys.stderr)
    return records


class RunLog:
    """metrics.jsonl (one JSON record per line, appended as it happens) and bpc.png, on rank 0 only."""

    def __init__(self, out_dir: Path, enabled: bool, until_step: Optional[int]) -> None:
        """Start a fresh log, or keep the records up to until_step (those a resumed run will not redo)."""
        self.enabled, self.path, self.plot_path = enabled, out_dir / METRICS, out_dir / PLOT
        self.records: list[dict] = []
        if not enabled:
            return
        if until_step is not None and self.path.exists():
            self.records = [r for r in read_records(self.path) if r["step"] <= until_step]
        self._rewrite()

    def _rewrite(self) -> None:
        """Write every record anew, atomically: a kill meanwhile must not lose the records of earlier runs."""
        write_atomically(self.path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in self.records).encode()))

    def log(self, **record: Any) -> None:
        """Append one record; one of a step and kind already logged (a finished run evaluated again) replaces it."""
        if not self.enabled:
            return
        if self.records and record["step"] <= self.records[-1]["step"]:
            kept = [r for r in self.records if (r["step"], r["kind"]) != (record["step"], record["kind"])]
            if len(kept) < len(self.records):
                self.records = kept + [record]
                self._rewrite()
                return
        self.records.append(record)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def plot(self) -> None:
        """Redraw train and validation bpc against steps, with the full-split results if there are any."""
        if not self.enabled:
            return
        fig, ax = plt.subplots(figsize=(8, 5))
        curves = {"train": ("-", 0, "train"), "val": ("o-", 3, "validation (random batches)"),
                  "val_full": ("s", 8, "validation (whole split)"), "test_full": ("*", 10, "test (whole split)")}
        for kind, (style, size, label) in curves.items():
            points = [(r["step"], r["bpc"]) for r in self.records if r["kind"] == kind]
            if points:
                ax.plot(*zip(*points), style, markersize=size, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel("bits per character")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(self.plot_path, dpi=100)
        plt.close(fig)
