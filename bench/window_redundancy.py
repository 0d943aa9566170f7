"""How much a longer window could tell about bench/quality.py's held-out documents: each document
compressed by LZMA2 with dictionaries (windows) of --windows bytes, as bits per byte. CPU only, no model.

LZMA codes a byte string by copying from the last dictionary-size bytes; what a larger dictionary
saves is the document's repeats further back than the smaller one reaches. Our models attend to
1-2k bytes (a block of 1024 and the XL memory's 1024); the saving from a 4 KiB dictionary to one
of the whole document is then an estimate of the copyable text beyond their window: what a kNN
layer (or a state) could exploit, by a compressor's measure rather than a model's.

    python bench/window_redundancy.py --corpus linux_c --eval-bytes 1e6
    python bench/window_redundancy.py --tiny          # a smoke test on this repository's files
"""

from __future__ import annotations

import argparse
import lzma
import sys
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quality import eval_documents, load_corpus  # noqa: E402

WINDOWS = (4096, 16384, 65536, 1 << 26)  # LZMA2's smallest dictionary is 4 KiB; 64 MiB covers any document here


def bits_per_byte(docs: Sequence[bytes], window: int) -> float:
    """Bits per byte of docs, each compressed on its own (raw LZMA2, no container) with a dictionary
    of ``window`` bytes at LZMA's strongest setting."""
    if not docs or not any(docs):
        raise ValueError(f"docs must hold at least one byte, got {len(docs)} documents of 0 bytes")
    if window < 4096:
        raise ValueError(f"window must be at least 4096 bytes (LZMA2's smallest dictionary), got {window}")
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": window}]
    bits = sum(8 * len(lzma.compress(doc, format=lzma.FORMAT_RAW, filters=filters)) for doc in docs)
    return bits / sum(len(doc) for doc in docs)


def main(argv: Optional[list[str]] = None) -> dict[int, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="linux_c")
    parser.add_argument("--corpora", type=Path, default=None, help="folder of the built corpora (default .corpora)")
    parser.add_argument("--eval-bytes", type=float, default=1e6,
                        help="the held-out bytes, as quality.py's --eval-bytes (default 1e6, as its recorded runs)")
    parser.add_argument("--eval-max-doc", type=int, default=None, help="quality.py's --eval-max-doc")
    parser.add_argument("--windows", type=int, nargs="+", default=list(WINDOWS), help="dictionary sizes (bytes)")
    parser.add_argument("--tiny", action="store_true", help="this repository's files")
    args = parser.parse_args(argv)
    name, _, test = load_corpus(args)
    docs = eval_documents(test, args.eval_bytes, args.eval_max_doc)
    if not docs:
        raise SystemExit(f"no held-out documents selected (--eval-bytes {args.eval_bytes:g})")
    result = {window: bits_per_byte(docs, window) for window in args.windows}
    print(f"{name}: {len(docs)} held-out documents ({sum(map(len, docs)):,} bytes), LZMA2 bits/byte by window:")
    for window, bpb in result.items():
        print(f"  {window:>10,} bytes  {bpb:.4f}")
    return result


if __name__ == "__main__":
    main()
