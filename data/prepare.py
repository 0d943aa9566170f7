"""Turn text files into a token directory that train.py reads by memory map (--data-tokens DIR).

    python data/prepare.py my_corpus/ --out data/my_corpus                       # bytes (the default)
    python data/prepare.py my_corpus/ --out data/my_corpus_bpe --tokenizer bpe --vocab-size 8192

Each input file is one document, kept whole; a folder stands for its files (recursively, sorted by
path; hidden ones skipped). Documents are split by count, in order: the first go to train, the next
to val, the last to test (--val-fraction, --test-fraction; --seed shuffles the documents first,
deterministically). Every document is followed by the separator token. --tokenizer bytes: the ids
are the file's bytes (0..255) and the separator is 256 (vocabulary 257). --tokenizer bpe: a
byte-level BPE (HF tokenizers) is trained here on the train split only, locally (nothing is
downloaded), and saved as DIR/tokenizer.json; the separator is its special token --separator.

Written: DIR/{train,val,test}.bin (raw little-endian uint16, or uint32 for vocabularies over 65,536)
and DIR/meta.json (dtype, vocab size, tokenizer, separator and its id, tokens, bytes of text and
documents per split, SHA-256 of the sources), last: a directory without meta.json is incomplete.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # training/ when run as data/prepare.py
from training.config import TrainError  # noqa: E402
from training.tokens import BYTES_SEPARATOR_ID, FORMAT, FORMAT_VERSION, META, SPLITS, TOKENIZER  # noqa: E402


def list_documents(inputs: list[str]) -> list[Path]:
    """The input files in order; a folder gives its files recursively, sorted, hidden ones skipped."""
    documents = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            documents += sorted(p for p in path.rglob("*") if p.is_file()
                                and not any(part.startswith(".") for part in p.relative_to(path).parts))
        elif path.is_file():
            documents.append(path)
        else:
            raise TrainError(f"{path}: no such file or folder")
    if not documents:
        raise TrainError(f"no documents in {' '.join(inputs)}")
    return documents


def split_documents(documents: list[Path], val_fraction: float, test_fraction: float,
                    seed: Optional[int]) -> dict[str, list[Path]]:
    """train / val / test by whole documents: the last round(n * test_fraction) test, the round(n * val_fraction)
    before them val (at least one each where the fraction is above 0), the rest train."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise TrainError(f"--val-fraction {val_fraction} and --test-fraction {test_fraction} must lie in [0, 1) "
                         f"and leave some documents to train on")
    documents = list(documents)
    if seed is not None:
        random.Random(seed).shuffle(documents)
    n = len(documents)
    n_val, n_test = (max(round(n * f), 1) if f > 0 else 0 for f in (val_fraction, test_fraction))
    if n - n_val - n_test < 1:
        raise TrainError(f"{n} document(s) are too few for a train, a val and a test split: give more files")
    return {"train": documents[:n - n_val - n_test], "val": documents[n - n_val - n_test:n - n_test],
            "test": documents[n - n_test:]}


def read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise TrainError(f"{path}: not UTF-8 text ({error}); a BPE tokenizer reads text (--tokenizer bytes "
                         f"takes any bytes)") from None


def train_bpe(documents: list[Path], vocab_size: int, separator: str):
    """A byte-level BPE tokenizer trained on documents, with separator as its one special token (id 0)."""
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError:
        raise TrainError('--tokenizer bpe needs tokenizers: pip install "block-recurrent-transformer-pytorch[tokenize]"'
                         ) from None
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[separator], show_progress=True,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator((read_text(p) for p in documents), trainer=trainer, length=len(documents))
    tokenizer.encode_special_tokens = True  # a document's literal separator text is text, not a separator
    return tokenizer


def source_hash(documents: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in documents:
        data = path.read_bytes()
        digest.update(f"{path.name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def prepare(inputs: list[str], out: Path, tokenizer: str = "bytes", vocab_size: int = 8192,
            val_fraction: float = 0.05, test_fraction: float = 0.05, seed: Optional[int] = None,
            separator: str = "<|endoftext|>") -> dict:
    """Write the token directory out (see the module docstring); returns its metadata."""
    out = Path(out)
    splits = split_documents(list_documents(inputs), val_fraction, test_fraction, seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / META).unlink(missing_ok=True)  # incomplete until rewritten at the end
    if tokenizer == "bytes":
        vocab, separator_id, tokenizer_name = BYTES_SEPARATOR_ID + 1, BYTES_SEPARATOR_ID, "bytes"

        def encode(path: Path) -> list[int] | np.ndarray:
            return np.frombuffer(path.read_bytes(), dtype=np.uint8)
    else:
        bpe = train_bpe(splits["train"], vocab_size, separator)
        bpe.save(str(out / TOKENIZER))
        vocab, separator_id, tokenizer_name = bpe.get_vocab_size(), bpe.token_to_id(separator), TOKENIZER

        def encode(path: Path) -> list[int] | np.ndarray:
            return bpe.encode(read_text(path)).ids

    dtype = np.dtype("<u2" if vocab <= 1 << 16 else "<u4")
    total = sum(p.stat().st_size for docs in splits.values() for p in docs)
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "dtype": dtype.name, "vocab_size": vocab,
            "tokenizer": tokenizer_name, "separator": separator, "separator_id": separator_id,
            "separator_position": "after every document", "splits": {}}
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"tokenizing ({tokenizer_name})") as bar:
        for name in SPLITS:
            tokens = text_bytes = 0
            with open(out / f"{name}.bin", "wb") as f:
                for path in splits[name]:
                    ids = np.asarray(encode(path), dtype=dtype)
                    np.append(ids, np.array([separator_id], dtype)).tofile(f)
                    size = path.stat().st_size
                    tokens, text_bytes = tokens + len(ids) + 1, text_bytes + size
                    bar.update(size)
            meta["splits"][name] = {"file": f"{name}.bin", "tokens": tokens, "bytes": text_bytes,
                                    "documents": len(splits[name])}
    meta["source"] = {"files": sum(len(d) for d in splits.values()),
                      "sha256": source_hash([p for name in SPLITS for p in splits[name]])}
    tmp = out / (META + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(out / META)
    return meta


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="text files and folders of them, one document a file")
    parser.add_argument("--out", required=True, metavar="DIR", help="the token directory to write")
    parser.add_argument("--tokenizer", choices=("bytes", "bpe"), default="bytes",
                        help="bytes (ids 0..255, default) or a byte-level BPE trained on the train split")
    parser.add_argument("--vocab-size", type=int, default=8192, help="BPE vocabulary size (default: 8192)")
    parser.add_argument("--val-fraction", type=float, default=0.05, help="fraction of documents for val (default: 0.05)")
    parser.add_argument("--test-fraction", type=float, default=0.05, help="fraction of documents for test (default: 0.05)")
    parser.add_argument("--seed", type=int, default=None, help="shuffle the documents with this seed before "
                                                               "splitting (default: keep their order)")
    parser.add_argument("--separator", default="<|endoftext|>", help="the separator's text (BPE: its special token)")
    args = parser.parse_args(argv)
    try:
        meta = prepare(args.inputs, Path(args.out), args.tokenizer, args.vocab_size, args.val_fraction,
                       args.test_fraction, args.seed, args.separator)
    except TrainError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name, info in meta["splits"].items():
        print(f"{name}: {info['documents']:,} documents, {info['bytes']:,} bytes, {info['tokens']:,} tokens")
    print(f"wrote {args.out}/ (vocabulary {meta['vocab_size']:,}, {meta['dtype']}); train with: "
          f"python train.py --data-tokens {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
