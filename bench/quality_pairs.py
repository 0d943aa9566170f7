"""Paired differences between bench/quality.py runs, document by document over the held-out
documents both evaluated.

    python bench/quality_pairs.py RUN_A RUN_B [RUN_A RUN_B ...] [--by-length 8k,16k,32k]

RUN is FILE:IMPL, a JSONL of quality.py's records and a run's --impl in it, e.g.
bench/results/2026-11-30_2xh200_f8247ae/q100m_paired_all.jsonl:quality_1_ours. For each pair it
prints A's bits/byte minus B's over the documents both evaluated (the first ones of the held-out
split: where one run evaluated more, the rest are left out), weighted by the documents' bytes; how
many of them A predicts better; and the median and spread of the per-document differences. With
--by-length, the same within each group of documents by length (split at the sizes given), which
says whether a difference grows with the reach a document offers.

Read them knowing what the two runs share. Runs with the same initial weights and the same documents
(ours and ours_unread at one seed) differ by what the change does alone. Runs with other initial
draws also differ by the draw, which moves every document the same way at once (bench/RESULTS.md,
tenth session): there, many documents better is no evidence of a better model; only seeds are.
"""

from __future__ import annotations

import argparse
import os
import sys
from statistics import median, pstdev
from types import SimpleNamespace
from typing import Any, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quality  # noqa: E402
from quality_table import load_runs  # noqa: E402


def load_run(spec: str) -> dict[str, Any]:
    """The run FILE:IMPL names: its flags (args), per-document bits/byte and the documents' bytes."""
    path, _, impl = spec.rpartition(":")
    if not path or not impl:
        raise SystemExit(f"a run is FILE:IMPL (a quality.py JSONL and the run's --impl), got {spec!r}")
    run = next((run for run in load_runs([path]) if run["impl"] == impl), None)
    if run is None or not run["args"] or run["result"] is None:
        raise SystemExit(f"{path} holds no config and result records of a run {impl!r}")
    evaluation = run["result"]["eval"]
    sizes = evaluation.get("document_bytes") or document_bytes(run["args"], len(evaluation["by_document"]))
    return dict(name=spec, by_document=evaluation["by_document"], sizes=sizes)


def document_bytes(args: dict[str, Any], count: int) -> list[int]:
    """The bytes of the first ``count`` documents a run evaluated, from the corpus it names (records
    written before quality.py recorded them)."""
    corpus_args = SimpleNamespace(tiny=args.get("tiny", False), corpora=args.get("corpora"), corpus=args["corpus"])
    _, _, test = quality.load_corpus(corpus_args)
    docs = quality.eval_documents(test, args["eval_bytes"], args.get("eval_max_doc"))
    return [len(doc) for doc in docs[:count]]


def paired_difference(a: dict[str, Any], b: dict[str, Any], edges: tuple[int, ...] = ()) -> dict[str, Any]:
    """A minus B over the documents both evaluated: bytes-weighted bits/byte, documents A predicts better
    (of how many), median and population standard deviation of the per-document differences; with
    ``edges`` (ascending byte counts), the same for each group of documents by length ("by_length")."""
    count = min(len(a["by_document"]), len(b["by_document"]))
    if a["sizes"][:count] != b["sizes"][:count]:
        raise SystemExit(f"{a['name']} and {b['name']} evaluated other documents (their bytes differ): "
                         f"compare runs of one corpus and held-out split")
    sizes = a["sizes"][:count]
    diffs = [x - y for x, y in zip(a["by_document"][:count], b["by_document"][:count])]
    pair = summary(diffs, sizes)
    pair["by_length"] = []
    if edges:
        bounds = [0, *edges, None]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            members = [i for i, n in enumerate(sizes) if lo <= n and (hi is None or n < hi)]
            group = summary([diffs[i] for i in members], [sizes[i] for i in members]) if members else dict(documents=0)
            pair["by_length"].append(dict(from_bytes=lo, below_bytes=hi, **group))
    return pair


def summary(diffs: list[float], sizes: list[int]) -> dict[str, Any]:
    """The bytes-weighted mean of per-document differences, how many are negative (A better), their
    median and population standard deviation."""
    return dict(documents=len(diffs), bpb=sum(d * n for d, n in zip(diffs, sizes)) / sum(sizes),
                better=sum(d < 0 for d in diffs), median=median(diffs), sd=pstdev(diffs))


def byte_sizes(text: str) -> tuple[int, ...]:
    """Ascending document lengths from "8k,16k,32k" (k: 1024 bytes); SystemExit naming the flag if not."""
    try:
        edges = tuple(int(float(v[:-1]) * 1024) if v.lower().endswith("k") else int(v) for v in text.split(","))
    except ValueError:
        edges = ()
    if not edges or any(e <= 0 for e in edges) or list(edges) != sorted(set(edges)):
        raise SystemExit(f"--by-length takes ascending positive byte counts such as 8k,16k,32k, got {text!r}")
    return edges


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="FILE:IMPL", help="pairs of runs: A B [A B ...]")
    parser.add_argument("--by-length", metavar="SIZES", default=None,
                        help="also each group of documents by length, split at these ascending sizes in bytes "
                             "(k: 1024), e.g. 8k,16k,32k")
    args = parser.parse_args(argv)
    if len(args.runs) % 2:
        parser.error(f"runs come in pairs (A B), got {len(args.runs)}")
    edges = byte_sizes(args.by_length) if args.by_length is not None else ()
    pairs = []
    for spec_a, spec_b in zip(args.runs[::2], args.runs[1::2]):
        pair = dict(a=spec_a, b=spec_b, **paired_difference(load_run(spec_a), load_run(spec_b), edges))
        pairs.append(pair)
        print(f"{spec_a}\n  - {spec_b}\n  = {pair['bpb']:+.4f} bits/byte over {pair['documents']} documents; "
              f"A better in {pair['better']}; median {pair['median']:+.4f}, sd {pair['sd']:.4f}")
        for group in pair["by_length"]:
            low, high = group["from_bytes"], group["below_bytes"]
            length = (f"documents of {low:,} bytes or more" if high is None else
                      f"documents of {low:,} to {high - 1:,} bytes")
            print(f"    {length}: none" if not group["documents"] else
                  f"    {length}: {group['bpb']:+.4f} over {group['documents']}; A better in {group['better']}")
    return pairs


if __name__ == "__main__":
    main()
