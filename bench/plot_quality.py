"""Bits per byte against the byte's offset in its document, one line per bench/quality.py run.

    python bench/plot_quality.py OUT.png RUN.jsonl[=LABEL] ...

Each RUN.jsonl is a quality.py record file; its result's evaluation by offset bucket (0-1k, 1k-4k,
4k-16k, 16k-64k, 64k+) is one line, named LABEL (default: the run's impl). Where the line of a model
with a recurrent state falls below the same model's without one, past the first block, the state
carries something the XL memory does not.
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")  # files only: no display
import matplotlib.pyplot as plt  # noqa: E402


def result_of(path: str) -> dict:
    """The result record of a quality.py JSONL file."""
    with open(path) as f:
        for line in f:
            record = json.loads(line)
            if record.get("kind") == "result":
                return record
    raise SystemExit(f"{path}: no result record (did the run finish?)")


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    out, runs = argv[0], argv[1:]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        path, _, label = run.partition("=")
        result = result_of(path)
        buckets = [(name, cell["bpb"]) for name, cell in result["eval"]["by_offset"].items() if cell["bpb"] is not None]
        ax.plot([name for name, _ in buckets], [bpb for _, bpb in buckets], marker="o",
                label=f"{label or result['impl']} ({result['eval']['bpb']:.3f} overall)")
    ax.set_xlabel("offset of the byte in its document")
    ax.set_ylabel("held-out bits per byte")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
