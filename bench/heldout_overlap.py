"""How much of each held-out document the training split already holds: bench/quality.py's evaluated
documents against every training document, by shared 32-byte windows. CPU only, no model.

A held-out figure measures generalisation only if the held-out documents are not (near) copies of
training ones; where some are, whether a run read those copies, and how late, would move its figure
from seed to seed. For each evaluated document this reports the fraction of its windows found
anywhere in the training split, and the one training document sharing the most of them.

Windows are hashed (a polynomial hash of their bytes) and one in ``--sample`` kept, chosen by hash
value, so a window kept in one document is kept wherever else it occurs. The fractions are of a
document's distinct windows (a window repeated in it counts once), estimated from about 1 / sample
of them; a document shorter than a window has none and is reported without a fraction.

    python bench/heldout_overlap.py --corpus linux_c --eval-bytes 1e6
    python bench/heldout_overlap.py --tiny          # a smoke test on this repository's files
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import median
from typing import Any, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import corpora  # noqa: E402
from quality import eval_documents, load_corpus  # noqa: E402

WIDTH = 32
SAMPLE = 16
PRIME = np.uint64(1099511628211)  # the 64-bit FNV prime: any odd multiplier mixes the bytes


def window_hashes(doc: bytes, width: int = WIDTH, sample: int = SAMPLE) -> np.ndarray:
    """The distinct hashes of doc's width-byte windows, those whose hash falls in one sample-th of the range."""
    data = np.frombuffer(doc, dtype=np.uint8)
    count = len(data) - width + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    hashes = np.zeros(count, dtype=np.uint64)
    for j in range(width):  # wraps modulo 2**64, as meant
        hashes = hashes * PRIME + data[j:j + count].astype(np.uint64)
    return np.unique(hashes[(hashes >> np.uint64(40)) % np.uint64(sample) == 0])


def overlap(train_docs: list[bytes], held_out: list[bytes], width: int = WIDTH,
            sample: int = SAMPLE) -> list[dict[str, Any]]:
    """For each held-out document: its bytes, its distinct sampled windows, the fraction of them found
    in any training document (``shared``), and the training document sharing the most (``best``, its
    index in train_docs, and ``best_shared``, that fraction; None and 0.0 where none shares any). A
    document without sampled windows has ``shared`` and ``best_shared`` None."""
    per_doc = [window_hashes(doc, width, sample) for doc in train_docs]
    hashes = np.concatenate(per_doc) if per_doc else np.zeros(0, dtype=np.uint64)
    owners = np.repeat(np.arange(len(per_doc)), [len(h) for h in per_doc])
    order = np.argsort(hashes, kind="stable")
    hashes, owners = hashes[order], owners[order]
    results = []
    for doc in held_out:
        mine = window_hashes(doc, width, sample)
        if not len(mine):
            results.append(dict(bytes=len(doc), windows=0, shared=None, best=None, best_shared=None))
            continue
        first, last = np.searchsorted(hashes, mine, "left"), np.searchsorted(hashes, mine, "right")
        found = last > first
        # each training document's windows are distinct, so a run of equal hashes names each owner once
        sharers = np.concatenate([owners[a:b] for a, b in zip(first[found], last[found])]) if found.any() else \
            np.zeros(0, dtype=np.int64)
        counts = np.bincount(sharers, minlength=len(train_docs)) if len(sharers) else None
        best = int(counts.argmax()) if counts is not None else None
        results.append(dict(bytes=len(doc), windows=len(mine),
                            shared=round(float(found.mean()), 4), best=best,
                            best_shared=round(float(counts[best]) / len(mine), 4) if best is not None else 0.0))
    return results


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="linux_c")
    parser.add_argument("--corpora", type=Path, default=None, help="folder of the built corpora (default .corpora)")
    parser.add_argument("--eval-bytes", type=float, default=1e6, help="quality.py's --eval-bytes")
    parser.add_argument("--eval-max-doc", type=int, default=None, help="quality.py's --eval-max-doc")
    parser.add_argument("--tiny", action="store_true", help="this repository's files")
    parser.add_argument("--out", default=None, help="write one JSON line per held-out document here")
    args = parser.parse_args(argv)
    name, train, test = load_corpus(args)
    train_docs = corpora.documents(bytes(train.numpy()))
    held_out = eval_documents(test, args.eval_bytes, args.eval_max_doc)
    if not held_out:
        raise SystemExit(f"no held-out documents selected (--eval-bytes {args.eval_bytes:g})")
    results = overlap(train_docs, held_out)
    print(f"{name}: {len(held_out)} held-out documents ({sum(map(len, held_out)) / 1e6:.2f} MB) against "
          f"{len(train_docs)} training documents, {WIDTH}-byte windows, 1 in {SAMPLE} sampled")
    print(f"{'doc':>4} {'bytes':>8} {'windows':>7} {'shared':>7} {'best doc':>8} {'its share':>9}")
    for i, r in enumerate(results):
        if r["shared"] is None:
            print(f"{i:4d} {r['bytes']:8d} {0:7d}       - (shorter than a window, or no window sampled)")
            continue
        print(f"{i:4d} {r['bytes']:8d} {r['windows']:7d} {r['shared']:7.3f} {str(r['best']):>8} {r['best_shared']:9.3f}")
    measured = [r for r in results if r["shared"] is not None]
    if measured:
        shared = [r["shared"] for r in measured]
        close = sum(r["best_shared"] >= 0.5 for r in measured)
        print(f"shared: median {median(shared):.3f}, max {max(shared):.3f}; documents with a training document "
              f"sharing half of their windows or more: {close} of {len(measured)}")
    if args.out:
        with open(args.out, "w") as f:
            for i, r in enumerate(results):
                f.write(json.dumps(dict(corpus=name, document=i, **r)) + "\n")
    return results


if __name__ == "__main__":
    main()
