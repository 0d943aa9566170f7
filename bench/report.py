"""Turn the benches' JSONL files into markdown tables comparing one implementation with a baseline.

    python bench/report.py bench_out                 # every *.jsonl in the folder (or files, several folders)
    python bench/report.py bench_out --new ours --base seed

Ratios are new / base: above 1 is better for tokens/s and MFU, below 1 is better for memory.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from typing import Any, Optional

Record = dict[str, Any]


def load(paths: list[str]) -> list[Record]:
    """Every record of every JSONL file named, or found in the folders named."""
    files: list[str] = []
    for path in paths:
        files += sorted(glob.glob(os.path.join(path, "*.jsonl"))) if os.path.isdir(path) else [path]
    records = []
    for name in files:
        with open(name) as f:
            records += [json.loads(line) for line in f if line.strip()]
    return records


def fmt(value: Optional[float], kind: str) -> str:
    if value is None:
        return "–"
    if kind == "tok":
        return f"{value / 1e3:,.1f}k" if value >= 1e4 else f"{value:,.1f}"
    if kind == "pct":
        return f"{100 * value:.3g}%"
    return f"{value:.2f}"


def value(record: Optional[Record], key: str) -> Optional[float]:
    return None if record is None or "error" in record else record.get(key)


def ratio(new: Optional[float], base: Optional[float]) -> str:
    return f"{new / base:.2f}x" if new is not None and base else "–"


def cell(record: Optional[Record], key: str, kind: str) -> str:
    """A value, or why it is missing (an error, or the case didn't run)."""
    if record is None:
        return "not run"
    if "error" in record:
        return "error: " + record["error"][:60].replace("|", "/")
    text = fmt(record.get(key), kind)
    if key == "tok_per_s" and record.get("truncated"):
        text += f" (to {record['generated_len']})"  # measured on a shorter generation
    return text


def table(records: list[Record], bench: str, new: str, base: str, metrics: list[tuple[str, str, str]]) -> list[str]:
    """One row per case: each metric for new and base, and their ratio."""
    by_case: dict[str, dict[str, Record]] = {}
    for r in records:
        if r.get("bench") == bench and r.get("case") != "env":
            by_case.setdefault(r["case"], {})[r["impl"]] = r  # a later run of the same case wins
    header = ["case"]
    for label, _, _ in metrics:
        header += [f"{new} {label}", f"{base} {label}", f"{new}/{base}"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for case, impls in by_case.items():
        a, b = impls.get(new), impls.get(base)
        row = [case]
        for _, key, kind in metrics:
            row += [cell(a, key, kind), cell(b, key, kind), ratio(value(a, key), value(b, key))]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", default=[os.environ.get("OUT", "bench_out")])
    parser.add_argument("--new", default="ours")
    parser.add_argument("--base", default="seed")
    args = parser.parse_args()
    records = load(args.paths)

    lines = ["## Environment", ""]
    for r in records:
        if r.get("case") == "env":
            where = r.get("gpu", r.get("device"))
            peak = f", bf16 matmul {r['matmul_tflops']} TFLOP/s" if "matmul_tflops" in r else ""
            lines.append(f"- {r['bench']} / {r['impl']}: {where}, torch {r['torch']}{peak}, package {r['module']}")
    lines += ["", "## Training step (fwd + bwd + AdamW, bf16 autocast)", ""]
    lines += table(records, "train", args.new, args.base,
                   [("tok/s", "tok_per_s", "tok"), ("peak GiB", "peak_gib", "num"), ("MFU", "mfu", "pct")])
    lines += ["", "## Generation (gen_bB_toN: batch B, N tokens incl. the prime; tok/s over all rows;"
              " \"(to M)\": measured on a shorter run to M tokens)", ""]
    lines += table(records, "generate", args.new, args.base,
                   [("tok/s", "tok_per_s", "tok"), ("peak GiB", "peak_gib", "num")])
    print("\n".join(lines))


if __name__ == "__main__":
    main()
