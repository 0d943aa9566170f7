"""Token directories (written by data/prepare.py): each split a raw little-endian uint16/uint32 file read by
memory map, meta.json describing them, and tokenizer.json when the tokens are not bytes.

    DIR/meta.json        format, dtype, vocab_size, tokenizer ("bytes" or "tokenizer.json"), separator
                         and separator_id, the source files' hash, and per split: file, tokens, bytes
                         (of text), documents
    DIR/train.bin ...    the split's token ids, documents in order, each followed by the separator
    DIR/tokenizer.json   the byte-level BPE tokenizer (HF tokenizers), trained on the train split

A split is read through TokenSplit: indexing it reads only the rows asked for and returns int64
tensors, so host memory stays constant however large the corpus.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import Tensor

from .config import TrainError

META = "meta.json"
TOKENIZER = "tokenizer.json"
FORMAT = "block-recurrent-tokens"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
BYTES_SEPARATOR_ID = 256  # byte ids are 0..255; the document separator is one more token


class TokenSplit:
    """One split of a token directory, memory-mapped. ``split[index]`` (ints, slices, index tensors)
    returns an int64 tensor of only those tokens; ``tokens_per_byte`` converts per-token losses to
    per-byte ones (bits/byte = nats per token * tokens_per_byte / ln 2). An id outside the vocabulary
    (a corrupted file) raises a TrainError naming the file when read."""

    def __init__(self, path: Path, dtype: str, tokens: int, text_bytes: int, vocab_size: int) -> None:
        self.path, self.tokens_per_byte, self.vocab_size = path, tokens / max(text_bytes, 1), vocab_size
        self.array = np.memmap(path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r", shape=(tokens,)) \
            if tokens else np.zeros(0, dtype)

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index: Any) -> Tensor:
        index = tuple(i.numpy() if isinstance(i, Tensor) else i for i in index) if isinstance(index, tuple) \
            else index.numpy() if isinstance(index, Tensor) else index
        ids = torch.from_numpy(np.asarray(self.array[index], dtype=np.int64))
        if ids.numel() and int(ids.max()) >= self.vocab_size:
            raise TrainError(f"{self.path}: holds token id {int(ids.max())}, outside the vocabulary of "
                             f"{self.vocab_size} in {META}: the file is corrupted; prepare the directory again")
        return ids

    def numpy(self) -> np.ndarray:
        """The memory map itself (for a checksum over the raw file)."""
        return self.array


def read_meta(directory: Path) -> dict:
    """DIR/meta.json, checked to describe a token directory this version reads."""
    path = Path(directory) / META
    if not path.is_file():
        raise TrainError(f"{path}: no such file: --data-tokens takes a directory written by data/prepare.py")
    try:
        meta = json.loads(path.read_text())
        ok = meta.get("format") == FORMAT and meta.get("version") == FORMAT_VERSION
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
        raise TrainError(f"{path}: not a token directory's metadata ({error})") from None
    if not ok:
        raise TrainError(f"{path}: expected format {FORMAT!r} version {FORMAT_VERSION}, got "
                         f"{meta.get('format')!r} version {meta.get('version')!r}")
    return meta


def open_splits(directory: Path) -> tuple[dict, tuple[TokenSplit, TokenSplit, TokenSplit]]:
    """The metadata and the three splits, each file checked to hold exactly the tokens meta.json says."""
    directory = Path(directory)
    meta = read_meta(directory)
    splits = []
    for name in SPLITS:
        info = meta["splits"][name]
        path = directory / info["file"]
        itemsize = np.dtype(meta["dtype"]).itemsize
        if not path.is_file():
            raise TrainError(f"{path}: no such file ({META} lists it as the {name} split)")
        size = path.stat().st_size
        if size != info["tokens"] * itemsize:
            raise TrainError(f"{path}: {size:,} bytes, but {META} says {info['tokens']:,} {meta['dtype']} tokens "
                             f"({info['tokens'] * itemsize:,} bytes): the file is truncated or corrupted; "
                             f"prepare the directory again (data/prepare.py)")
        splits.append(TokenSplit(path, meta["dtype"], info["tokens"], info["bytes"], meta["vocab_size"]))
    return meta, tuple(splits)


def check_vocab(meta: dict, directory: Path, num_tokens: int) -> None:
    """The model's vocabulary must be the token files': refuse a mismatch."""
    if num_tokens != meta["vocab_size"]:
        raise TrainError(f"the model's vocabulary ({num_tokens} tokens: --num-tokens, or the config of --init-from or "
                         f"--resume) differs from {Path(directory) / META}'s ({meta['vocab_size']} tokens, tokenizer "
                         f"{meta['tokenizer']!r}): leave --num-tokens out to take it from the token directory")


def decoder(directory: Path, meta: Optional[dict] = None) -> Callable[[list[int]], str]:
    """ids -> text for a token directory: bytes as UTF-8, or through its tokenizer.json; the separator
    is written as its text (meta["separator"])."""
    meta = meta or read_meta(directory)
    separator, separator_id = meta["separator"], meta["separator_id"]
    if meta["tokenizer"] == "bytes":
        def piece(ids: list[int]) -> str:
            return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")
    else:
        tokenizer = load_tokenizer(Path(directory) / meta["tokenizer"])

        def piece(ids: list[int]) -> str:
            return tokenizer.decode(ids, skip_special_tokens=False)

    def decode(ids: list[int]) -> str:
        parts, start = [], 0
        for i, token in enumerate(ids):
            if token == separator_id:
                parts.append(piece(ids[start:i]))
                start = i + 1
        return separator.join(parts + [piece(ids[start:])])

    return decode


def load_tokenizer(path: Path):
    """A tokenizers.Tokenizer from a local tokenizer.json (never downloaded)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise TrainError('BPE token files need the tokenizers package: pip install '
                         '"block-recurrent-transformer-pytorch[tokenize]" (or pip install tokenizers)') from None
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises a bare Exception for a missing or damaged file
        raise TrainError(f"{path}: cannot load the tokenizer ({error})") from None


def bits_per_byte(loss_nats: float, data: Any) -> float:
    """Bits per byte of text from a mean loss in nats per token over data: nats * tokens / bytes / ln 2.
    Byte data (a plain tensor of bytes: tokens are bytes) has tokens_per_byte 1: bits per character."""
    return loss_nats * getattr(data, "tokens_per_byte", 1.0) / math.log(2)
