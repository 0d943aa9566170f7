"""Long-document byte corpora for the quality bench (issue 15), built reproducibly from pinned Debian packages.

Corpora (one document = one file, kept whole and in order):

  linux_c        C sources (*.c, *.h) of linux-source-6.1 6.1.192-3 (the kernel tarball inside the
                 .deb), a fixed-seed sample of the files of at least --min-doc bytes
  python_stdlib  the Python 3.11.2 standard library and its test suite (*.py under usr/lib/python3.11)
                 from libpython3.11-minimal, libpython3.11-stdlib and libpython3.11-testsuite
                 3.11.2-6+deb12u9
  text_docs      English technical prose: the kernel's Documentation/ (*.rst, *.txt, without
                 translations/) from the same linux-source tarball, and the Python 3.11 manual's reST
                 sources (_sources/*.rst.txt of python3.11-doc 3.11.2-6+deb12u9)

Each corpus: the matching files, sorted by path, NUL bytes stripped (NUL is the separator), those
shorter than --min-doc dropped, shuffled at document level by a fixed seed (random.Random(SEED)),
optionally cut to a byte target (linux_c), then the last documents (--test-mb, at most
--test-fraction of the documents) held out as the test split. The documents of a split are
joined, each followed by one separator byte 0x00:

  <out>/<name>.train.bin, <name>.test.bin        raw bytes
  <out>/<name>.json                              the recipe: packages, versions, sha256 of each .deb,
                                                 filters, counts, bytes, length distribution, paths
  <out>/xz/<name>.train.bin.xz, <name>.test.bin.xz   xz copies to carry to a machine without internet
                                                 (carry the one folder <out>/xz; all three corpora
                                                 whole: ~30 MiB); a train copy may hold only the first
                                                 documents of its split (--carry-train-mb)
  <out>/xz/<name>.json                           the recipe without the paths

    python bench/corpora.py --download --out /work/main/.corpora     # apt-get download the pinned .debs, build all
    python bench/corpora.py --out DIR --only text_docs               # one corpus (the .debs already in DIR/src)

``load_split(root, name, split)`` reads the raw file or, failing that, the .xz copy; ``documents()``
cuts a split into its documents; ``tiny_corpus()`` makes a small corpus from this repository's own
files for CPU smoke tests.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import lzma
import random
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

SEPARATOR = 0x00
SEED = 15
LINUX = ("linux-source-6.1", "6.1.192-3")
PYTHON_DEBS = (("libpython3.11-minimal", "3.11.2-6+deb12u9"), ("libpython3.11-stdlib", "3.11.2-6+deb12u9"),
               ("libpython3.11-testsuite", "3.11.2-6+deb12u9"))
PYDOC = ("python3.11-doc", "3.11.2-6+deb12u9")
ALL_DEBS = (LINUX, *PYTHON_DEBS, PYDOC)
NAMES = ("linux_c", "python_stdlib", "text_docs")
BUCKETS = ((0, 1 << 10), (1 << 10, 4 << 10), (4 << 10, 16 << 10), (16 << 10, 64 << 10), (64 << 10, None))


def bucket_name(lo: int, hi: Optional[int]) -> str:
    return f"{lo >> 10}k-{hi >> 10}k" if hi is not None else f"{lo >> 10}k+"


# ---- reading packages ----------------------------------------------------------------------------

def deb_path(src: Path, package: str, version: str) -> Path:
    """The .deb apt-get download saved for package=version (any architecture)."""
    found = sorted(src.glob(f"{package}_{version.replace(':', '%3a')}_*.deb"))
    return found[0] if found else src / f"{package}_{version}_MISSING.deb"


def download(src: Path) -> None:
    """apt-get download every pinned package into src (needs apt-get update done first)."""
    src.mkdir(parents=True, exist_ok=True)
    missing = [f"{p}={v}" for p, v in ALL_DEBS if not deb_path(src, p, v).exists()]
    if missing:
        subprocess.run(["apt-get", "download", *missing], cwd=src, check=True)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def deb_members(deb: Path) -> Iterator[tuple[str, bytes]]:
    """(path, bytes) of every regular file in a .deb's data archive (via dpkg-deb --fsys-tarfile)."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for member in tar:
            if member.isfile():
                yield member.name.lstrip("./"), tar.extractfile(member).read()
    if proc.wait() != 0:
        raise RuntimeError(f"dpkg-deb failed on {deb}")


def linux_members(deb: Path) -> Iterator[tuple[str, bytes]]:
    """(path, bytes) of every regular file of the kernel tarball inside linux-source's .deb."""
    for name, data in deb_members(deb):
        if name.endswith(".tar.xz") and "linux-source" in name:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:xz") as tar:
                for member in tar:
                    if member.isfile():
                        yield member.name, tar.extractfile(member).read()
            return
    raise RuntimeError(f"{deb} holds no linux-source tarball")


# ---- corpus building ------------------------------------------------------------------------------

def length_stats(lengths: list[int]) -> dict:
    """Count, bytes and quantiles of document lengths, and the bytes at each offset bucket."""
    if not lengths:
        return dict(documents=0, bytes=0)
    s = sorted(lengths)
    q = lambda f: s[min(int(f * len(s)), len(s) - 1)]  # noqa: E731
    at_offset = {}
    for lo, hi in BUCKETS:
        at_offset[bucket_name(lo, hi)] = sum(max(0, min(n, hi if hi is not None else n) - lo) for n in s)
    return dict(documents=len(s), bytes=sum(s), min=s[0], p10=q(0.1), p50=q(0.5), p90=q(0.9), p99=q(0.99),
                max=s[-1], mean=round(sum(s) / len(s)), bytes_at_offset=at_offset)


def build(name: str, docs: dict[str, bytes], out: Path, recipe: dict, min_doc: int, test_bytes: int,
          test_fraction: float, total_bytes: Optional[int], carry_train_mb: Optional[float]) -> dict:
    """Filter, shuffle, split and write one corpus (see the module docstring); returns its recipe."""
    stripped = 0
    kept: list[tuple[str, bytes]] = []
    for path in sorted(docs):
        data = docs[path]
        if SEPARATOR in data:
            stripped += data.count(SEPARATOR)
            data = data.replace(bytes([SEPARATOR]), b"")
        if len(data) >= min_doc:
            kept.append((path, data))
    candidates = len(kept)
    random.Random(SEED).shuffle(kept)
    if total_bytes is not None:  # the first documents of the shuffled order up to the byte target
        chosen, size = [], 0
        for item in kept:
            if size >= total_bytes:
                break
            chosen.append(item)
            size += len(item[1])
        kept = chosen
    n_test, size = 0, 0
    while size < test_bytes and n_test < max(1, int(test_fraction * len(kept))):
        n_test += 1
        size += len(kept[-n_test][1])
    splits = {"train": kept[:len(kept) - n_test], "test": kept[len(kept) - n_test:]}
    out.mkdir(parents=True, exist_ok=True)
    record = dict(name=name, **recipe, separator=SEPARATOR, separator_note="each document is followed by one 0x00 byte; "
                  "0x00 bytes were stripped from the documents", nul_bytes_stripped=stripped, seed=SEED,
                  min_doc_bytes=min_doc, candidate_documents=candidates, selected_byte_target=total_bytes,
                  order="files sorted by path, shuffled by random.Random(seed).shuffle, cut to the byte target; "
                        "test = the last documents", splits={}, files={})
    for split, items in splits.items():
        blob = b"".join(data + bytes([SEPARATOR]) for _, data in items)
        (out / f"{name}.{split}.bin").write_bytes(blob)
        carried = items
        if split == "train" and carry_train_mb is not None:
            carried, size = [], 0
            for item in items:
                if size + len(item[1]) + 1 > carry_train_mb * 2 ** 20:
                    break
                carried.append(item)
                size += len(item[1]) + 1
        carry_blob = b"".join(data + bytes([SEPARATOR]) for _, data in carried)
        start = time.perf_counter()
        packed = lzma.compress(carry_blob, preset=6)
        (out / "xz").mkdir(exist_ok=True)
        (out / "xz" / f"{name}.{split}.bin.xz").write_bytes(packed)
        record["splits"][split] = dict(length_stats([len(d) for _, d in items]), bytes_with_separators=len(blob),
                                       sha256=hashlib.sha256(blob).hexdigest(),
                                       first_paths=[p for p, _ in items[:5]])
        record["files"][f"{name}.{split}.bin.xz"] = dict(
            bytes=len(packed), holds_documents=len(carried), holds_bytes=len(carry_blob),
            whole_split=len(carried) == len(items), sha256_unpacked=hashlib.sha256(carry_blob).hexdigest(),
            seconds_to_compress=round(time.perf_counter() - start, 1))
        print(f"{name}.{split}: {len(items):,} documents, {len(blob) / 1e6:.1f} MB; xz {len(packed) / 2 ** 20:.1f} MiB"
              f" holding {len(carried):,} documents ({len(carry_blob) / 1e6:.1f} MB)", flush=True)
    (out / "xz" / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    record["paths"] = {split: [p for p, _ in items] for split, items in splits.items()}
    (out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def package_recipe(src: Path, debs: tuple[tuple[str, str], ...]) -> list[dict]:
    return [dict(package=p, version=v, deb=deb_path(src, p, v).name, sha256=sha256(deb_path(src, p, v)),
                 how=f"apt-get download {p}={v} (Debian 12 bookworm)") for p, v in debs]


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="/work/main/.corpora", help="where the corpora go (the .debs in OUT/src)")
    parser.add_argument("--download", action="store_true", help="apt-get download the pinned packages first")
    parser.add_argument("--only", nargs="*", choices=NAMES, default=list(NAMES))
    parser.add_argument("--min-doc", type=int, default=4096, help="drop documents shorter than this (bytes)")
    parser.add_argument("--linux-mb", type=float, default=125.0, help="linux_c: bytes selected in all (MB, 1e6)")
    parser.add_argument("--test-mb", type=float, default=4.0, help="bytes held out as test (MB), at most "
                                                                     "--test-fraction of the documents")
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--carry-train-mb", type=float, nargs=3, default=None, metavar=("LINUX", "PY", "TEXT"),
                        help="MiB of the train split in each .xz copy (default: the whole split; all three "
                             "whole make ~30 MiB of .xz)")
    args = parser.parse_args(argv)
    out, src = Path(args.out), Path(args.out) / "src"
    if args.download:
        download(src)
    carry = dict(zip(NAMES, args.carry_train_mb or (None,) * len(NAMES)))
    common = dict(min_doc=args.min_doc, test_bytes=int(args.test_mb * 1e6), test_fraction=args.test_fraction)

    if "linux_c" in args.only or "text_docs" in args.only:
        linux_c, kernel_docs = {}, {}
        for path, data in linux_members(deb_path(src, *LINUX)):
            rel = path.split("/", 1)[1]
            if rel.endswith((".c", ".h")):
                linux_c[rel] = data
            elif rel.startswith("Documentation/") and not rel.startswith("Documentation/translations/") \
                    and rel.endswith((".rst", ".txt")):
                kernel_docs[rel] = data
        if "linux_c" in args.only:
            build("linux_c", linux_c, out, dict(
                packages=package_recipe(src, (LINUX,)),
                file_filter="usr/src/linux-source-6.1.tar.xz: linux-source-6.1/**/*.c and *.h"),
                total_bytes=int(args.linux_mb * 1e6), carry_train_mb=carry["linux_c"], **common)
        del linux_c
    if "text_docs" in args.only:
        docs = {f"linux/{k}": v for k, v in kernel_docs.items()}
        for path, data in deb_members(deb_path(src, *PYDOC)):
            if "/_sources/" in path and path.endswith(".rst.txt"):
                docs[f"python-doc/{path.split('/_sources/', 1)[1]}"] = data
        build("text_docs", docs, out, dict(
            packages=package_recipe(src, (LINUX, PYDOC)),
            file_filter="linux-source-6.1/Documentation/**/*.rst and *.txt without Documentation/translations/; "
                        "python3.11-doc: usr/share/doc/python3.11/html/_sources/**/*.rst.txt"),
            total_bytes=None, carry_train_mb=carry["text_docs"], **common)
    if "python_stdlib" in args.only:
        docs = {}
        for package in PYTHON_DEBS:
            for path, data in deb_members(deb_path(src, *package)):
                if path.startswith("usr/lib/python3.11/") and path.endswith(".py"):
                    docs[path] = data
        build("python_stdlib", docs, out, dict(
            packages=package_recipe(src, PYTHON_DEBS), file_filter="usr/lib/python3.11/**/*.py"),
            total_bytes=None, carry_train_mb=carry["python_stdlib"], **common)


# ---- loading ----------------------------------------------------------------------------------------

def split_path(root: str | Path, name: str, split: str) -> Optional[Path]:
    """Where a split is: <root>/<name>.<split>.bin, else its xz copy in <root>/xz/ or <root>/ (None: nowhere)."""
    root = Path(root)
    for path in (root / f"{name}.{split}.bin", root / "xz" / f"{name}.{split}.bin.xz", root / f"{name}.{split}.bin.xz"):
        if path.exists():
            return path
    return None


def load_split(root: str | Path, name: str, split: str) -> bytes:
    """The bytes of a split: the raw file, or the xz copy when the raw file is absent."""
    path = split_path(root, name, split)
    if path is None:
        raise FileNotFoundError(f"no {name}.{split}.bin(.xz) in {root} or {root}/xz: build it with bench/corpora.py")
    return lzma.decompress(path.read_bytes()) if path.suffix == ".xz" else path.read_bytes()


def documents(blob: bytes) -> list[bytes]:
    """The documents of a split (each was followed by one separator byte)."""
    parts = blob.split(bytes([SEPARATOR]))
    return parts[:-1] if parts and parts[-1] == b"" else parts


def tiny_corpus(root: Path, min_doc: int = 2048) -> tuple[bytes, bytes]:
    """(train, test) from this repository's own .py and .md files: a CPU smoke-test corpus, built
    like the real ones (sorted, shuffled by SEED, the last 2 documents held out)."""
    files = sorted(p for p in root.rglob("*") if p.suffix in (".py", ".md") and ".git" not in p.parts
                   and ".venv" not in p.parts and p.is_file())
    docs = [p.read_bytes().replace(bytes([SEPARATOR]), b"") for p in files]
    docs = [d for d in docs if len(d) >= min_doc]
    random.Random(SEED).shuffle(docs)
    join: Callable[[list[bytes]], bytes] = lambda ds: b"".join(d + bytes([SEPARATOR]) for d in ds)  # noqa: E731
    return join(docs[:-2]), join(docs[-2:])


if __name__ == "__main__":
    main(sys.argv[1:])
