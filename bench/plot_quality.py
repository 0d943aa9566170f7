"""Bits per byte against the byte's offset in its document, one line per bench/quality.py run, or per
set of runs (e.g. the seeds of one configuration) averaged.

    python bench/plot_quality.py OUT.png RUN.jsonl[=LABEL] ...
    python bench/plot_quality.py OUT.png "all.jsonl@quality_0_ours+all.jsonl@quality_1_ours=ours, 2 seeds" ...

A line is LINE[=LABEL], LINE one run or several joined by '+', each run a quality.py JSONL file,
PATH@IMPL naming the run of impl IMPL in a file holding several (quality_gpu.sh's packed
quality_all.jsonl), PATH alone the file's first. Its evaluation by offset bucket (0-1k, 1k-4k, 4k-16k,
16k-64k, 64k+), averaged over the runs joined, is one line, named LABEL (default: the runs' impls).
Where the line of a model with a recurrent state falls below the same model's without one, past the
first block, the state carries something the XL memory does not.
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")  # files only: no display
import matplotlib.pyplot as plt  # noqa: E402

from quality_table import mean_by_offset  # noqa: E402  (bench/, beside this file)


def result_of(run: str) -> dict:
    """The result record of a run: PATH (a quality.py JSONL file's first) or PATH@IMPL (its run IMPL)."""
    path, _, impl = run.partition("@")
    with open(path) as f:
        for line in f:
            record = json.loads(line) if line.strip() else {}
            if record.get("kind") == "result" and (not impl or record.get("impl") == impl):
                return record
    raise SystemExit(f"{path}: no result record{f' of {impl}' if impl else ''} (did the run finish?)")


def line_of(runs: list[str]) -> tuple[str, list[str], list[float], float]:
    """The runs' impls, bucket names, mean bits/byte per bucket (buckets every run has) and overall."""
    results = [result_of(run) for run in runs]
    buckets = [(name, bpb) for name, bpb in mean_by_offset([r["eval"] for r in results]).items() if bpb is not None]
    overall = sum(r["eval"]["bpb"] for r in results) / len(results)
    return "+".join(r["impl"] for r in results), [n for n, _ in buckets], [b for _, b in buckets], overall


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    out, runs = argv[0], argv[1:]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for line in runs:
        members, _, label = line.partition("=")
        impls, names, means, overall = line_of(members.split("+"))
        ax.plot(names, means, marker="o", label=f"{label or impls} ({overall:.3f} overall)")
    ax.set_xlabel("offset of the byte in its document")
    ax.set_ylabel("held-out bits per byte")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
