"""The corpus: enwik8 (found or downloaded), any file of bytes (split 90/5/5), or a token directory
(training/tokens.py, memory-mapped); random batches."""

from __future__ import annotations

import gzip
import os
import urllib.request
import zipfile
import zlib
from contextlib import suppress
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor
from tqdm import tqdm

from .config import ENWIK8_BYTES, ENWIK8_URL, TrainConfig, TrainError
from .tokens import check_vocab, open_splits, read_meta


def read_bytes(path: Path, fmt: Optional[str] = None) -> bytes:
    """The bytes of a raw, gzip (.gz) or single-member zip (.zip) file; fmt overrides the suffix."""
    fmt = fmt or {".gz": "gz", ".zip": "zip"}.get(path.suffix, "raw")
    try:
        if fmt == "gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        if fmt == "zip":
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                if len(names) != 1:
                    raise TrainError(f"{path}: expected a zip holding one file, it holds {len(names)}")
                return archive.read(names[0])
        return path.read_bytes()
    except FileNotFoundError:
        raise TrainError(f"{path}: no such file") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise TrainError(f"{path}: cannot read it ({error})") from None


def download_enwik8(url: str, dest: Path, expected_size: int = ENWIK8_BYTES) -> bytes:
    """Download enwik8.zip to dest and return the unpacked bytes.

    The download goes to dest + '.part', renamed to dest only once complete and unpacked to exactly
    expected_size bytes, so an interrupted or wrong download never passes for the real file.
    """
    part = dest.with_name(dest.name + ".part")
    where = (f"Download {url} (the Hutter prize page, http://mattmahoney.net/dc/textdata.html) where you have "
             f"internet and put enwik8.zip (or the unpacked enwik8, or enwik8.gz) in {dest.parent.resolve()}/ "
             f"- see data/README.md")
    try:
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as f:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {url}") as bar:
                    while chunk := response.read(1 << 20):
                        f.write(chunk)
                        bar.update(len(chunk))
                if total is not None and f.tell() != total:
                    raise OSError(f"the connection closed after {f.tell():,} of {total:,} bytes")
                f.flush()
                os.fsync(f.fileno())
        except OSError as error:  # URLError, timeouts and refused connections are OSErrors
            raise TrainError(f"could not download enwik8 from {url}: {error}.\n{where}") from None
        data = read_bytes(part, fmt="zip")
        if len(data) != expected_size:
            raise TrainError(f"{url} unpacked to {len(data):,} bytes; enwik8 is exactly {expected_size:,}.\n{where}")
        os.replace(part, dest)
        return data
    finally:
        part.unlink(missing_ok=True)


def load_enwik8(data_dir: Path, url: str = ENWIK8_URL, expected_size: int = ENWIK8_BYTES) -> bytes:
    """enwik8 from data_dir (raw, .zip or .gz), downloaded there first if it holds none of them."""
    for name in ("enwik8", "enwik8.zip", "enwik8.gz"):
        path = data_dir / name
        if path.exists():
            data = read_bytes(path)
            if len(data) != expected_size:
                raise TrainError(f"{path} holds {len(data):,} bytes, enwik8 is exactly {expected_size:,}: "
                                 f"replace it, or delete it to download enwik8 again")
            return data
    created = [d for d in (data_dir, *data_dir.parents) if not d.exists()]  # deepest first
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        return download_enwik8(url, data_dir / "enwik8.zip", expected_size)
    except BaseException:  # a failed download leaves no empty directories behind (e.g. ./data outside the repo)
        for d in created:
            with suppress(OSError):  # not empty: something else wrote there meanwhile; keep it
                d.rmdir()
        raise


def split_bytes(data: bytes) -> tuple[Tensor, Tensor, Tensor]:
    """Train / validation / test: the first 90%, the next 5%, the last 5% (90M/5M/5M for enwik8)."""
    tokens = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    n_train, n_val = len(tokens) * 90 // 100, len(tokens) * 5 // 100
    return tokens[:n_train], tokens[n_train:n_train + n_val], tokens[n_train + n_val:]


def load_splits(cfg: TrainConfig) -> tuple[str, tuple[Tensor, Tensor, Tensor]]:
    """The corpus' name and its three splits, checked to be long enough for cfg."""
    unit = "bytes"
    if cfg.data_tokens is not None:  # memory-mapped token files (training/tokens.py)
        name, unit = cfg.data_tokens, "tokens"
        meta, splits = open_splits(Path(cfg.data_tokens))
        check_vocab(meta, Path(cfg.data_tokens), cfg.num_tokens)
    else:
        if cfg.data is not None:
            name, data = cfg.data, read_bytes(Path(cfg.data))
        else:
            name, data = "enwik8", load_enwik8(Path(cfg.data_dir), cfg.enwik8_url)
        if not data:  # torch.frombuffer cannot view an empty buffer: say what is wrong instead
            raise TrainError(f"{name}: no bytes to train on (the file is empty, or unpacks to nothing)")
        splits = split_bytes(data)
    need = cfg.seq_len + 1
    for split, tokens in zip(("train", "validation"), splits):
        if len(tokens) < need:
            raise TrainError(f"{name}: the {split} split has {len(tokens):,} {unit}, fewer than one sample "
                             f"(seq-len + 1 = {need:,}); use a larger file or a smaller --seq-len")
    if len(splits[2]) < cfg.eval_streams + 1:
        raise TrainError(f"{name}: the test split has {len(splits[2]):,} {unit}, too few for {cfg.eval_streams} streams")
    return name, splits


def document_separator(cfg: TrainConfig) -> Optional[int]:
    """The token that ends each document: --doc-separator for bytes, a token directory's own (its
    meta.json) with --documents; None where documents are not told apart."""
    if cfg.data_tokens is not None and cfg.documents:
        return read_meta(Path(cfg.data_tokens))["separator_id"]
    return cfg.doc_separator


def data_fingerprint(splits: tuple[Tensor, Tensor, Tensor]) -> dict[str, int]:
    """Size and CRC-32 of the whole corpus (its bytes after unpacking), kept in the checkpoint so that a
    resume notices changed data. Every byte, not a sample: zlib's CRC-32 of enwik8 takes ~0.03 s."""
    crc = 0
    for split in splits:
        crc = zlib.crc32(split.numpy(), crc)
    return {"bytes": sum(len(split) for split in splits), "crc32": crc}


def check_same_data(saved: Optional[dict[str, int]], now: dict[str, int], name: str) -> None:
    """Refuse to continue a run on other data than its checkpoint's (checkpoints from before the
    fingerprint have none: not checked)."""
    if saved is not None and saved != now:
        raise TrainError(f"{name}: the data differ from the checkpoint's ({saved['bytes']:,} bytes, CRC-32 "
                         f"{saved['crc32']:08x}; now {now['bytes']:,} bytes, {now['crc32']:08x}): point --data at "
                         f"the run's file, or pass --allow-data-change to go on with these")


def get_batch(data: Tensor, batch_size: int, seq_len: int, generator: torch.Generator,
              device: torch.device) -> Tensor:
    """batch_size random windows of seq_len + 1 bytes (inputs and next-byte targets) as token ids on device."""
    starts = torch.randint(len(data) - seq_len, (batch_size,), generator=generator)
    x = data[starts[:, None] + torch.arange(seq_len + 1)].long()
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True)
    return x
