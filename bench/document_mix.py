"""Which documents a training run reads: for a corpus, a batch layout and a token budget, per seed,
the documents the rows of ``DocumentStreams`` (train.py's --documents reader, bench/quality.py's)
read, the share of the tokens trained that are documents' bytes (the rest pads each document's last
segment), the share that went to the corpus's largest documents, and how often a row starts a
document (its memories are then hidden for a block: the reset path of the attention). CPU only, no
model.

A long-document corpus is often dominated by a few huge files (linux_c's largest, a generated
register header, is 10% of it): how much of a run they take is part of what a seed decides, next to
the initialisation, and it moved held-out bits/byte by 0.05 between two seeds of one configuration
(bench/RESULTS.md, 2026-11-30, sixth session).

    python bench/document_mix.py --corpus linux_c --rows 16 --seq 2048 --tokens 100e6 --seeds 0,1,2,3
    python bench/document_mix.py --rows 16 --seq 1024 --seg 512 ...   # quality.py's XL 512 + 512 layout
    python bench/document_mix.py --tiny          # a smoke test on this repository's files
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import corpora  # noqa: E402
from quality import load_corpus  # noqa: E402
from training.documents import DocumentStreams  # noqa: E402


def tokens_by_document(streams: DocumentStreams, steps: int, segments: int = 1) -> Counter:
    """Run ``steps`` calls of ``streams.next(segments)`` on fresh streams (its own reading) and count
    the tokens each document gave: every document a row took, whole, less what the rows still
    reading one have not read."""
    read: Counter = Counter()
    take = streams._take_document

    def counting_take(row: int) -> bool:
        taken = take(row)
        if taken:
            read[streams.piece[row]] += int(streams.lengths[streams.piece[row]])
        return taken

    streams._take_document = counting_take
    try:
        for _ in range(steps):
            streams.next(segments)
    finally:
        streams._take_document = take
    for row, piece in enumerate(streams.piece):
        if piece >= 0:  # still being read: only its first offset[row] tokens were
            read[piece] -= int(streams.lengths[piece]) - streams.offset[row]
    return read


def documents_started(streams: DocumentStreams, steps: int, segments: int = 1) -> tuple[int, int]:
    """Run ``steps`` calls of ``streams.next(segments)`` on fresh streams: how many of those steps have
    a row starting a document, and how many documents the rows started in all."""
    steps_with_start = started = 0
    for _ in range(steps):
        reset = streams.next(segments).reset
        steps_with_start += bool(reset.any())
        started += int(reset.sum())
    return steps_with_start, started


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="linux_c")
    parser.add_argument("--corpora", type=Path, default=None, help="folder of the built corpora (default .corpora)")
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--seq", type=int, default=2048, help="tokens per row and step")
    parser.add_argument("--seg", type=int, default=None,
                        help="tokens per segment, dividing --seq (default --seq): quality.py's model segment "
                             "(ours: max_seq_len; the XL: --seg), train.py's --max-seq-len; a document's last "
                             "segment is padded to its end")
    parser.add_argument("--tokens", type=float, default=100e6)
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--largest", type=int, default=3, help="how many of the largest documents to report")
    parser.add_argument("--tiny", action="store_true", help="this repository's files, 1M tokens")
    args = parser.parse_args(argv)
    if args.tiny:
        args.tokens = min(args.tokens, 1e6)
    seg = args.seg or args.seq
    if args.seq % seg:
        parser.error(f"--seq {args.seq} must be a multiple of --seg {seg}")
    name, train, _ = load_corpus(args)
    steps = math.ceil(args.tokens / (args.rows * args.seq))
    print(f"{name}: {len(train) / 1e6:.1f}M tokens; {args.rows} rows x {args.seq} tokens (segments of {seg}) "
          f"x {steps} steps")
    for seed in (int(s) for s in args.seeds.split(",")):
        streams = DocumentStreams(train, corpora.SEPARATOR, args.rows, seg, shuffle=True, seed=seed)
        read = tokens_by_document(streams, steps, args.seq // seg)
        total = sum(read.values())
        largest = sorted(range(len(streams)), key=lambda j: -int(streams.lengths[j]))[:args.largest]
        shares = ", ".join(f"{read[j] / total:.3f} of {int(streams.lengths[j]) / 1e6:.2f}M" for j in largest)
        trained = steps * args.rows * args.seq  # the rest is the padding of documents' last segments
        print(f"seed {seed}: {total / 1e6:.1f}M tokens ({total / trained:.1%} of the {trained / 1e6:.1f}M trained; "
              f"the rest padding) from {len(read)} of {len(streams)} documents; the largest documents' shares: {shares}")
        steps_with_start, started = documents_started(
            DocumentStreams(train, corpora.SEPARATOR, args.rows, seg, shuffle=True, seed=seed), steps, args.seq // seg)
        print(f"  a row starts a document in {steps_with_start / steps:.1%} of steps ({started / steps:.2f} rows a step; "
              f"{started / (steps * args.rows * (args.seq // seg)):.4f} a row and segment)")


if __name__ == "__main__":
    main()
