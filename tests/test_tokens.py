"""data/prepare.py's token directories (bytes and byte-level BPE) and train.py reading them by memory map:
the files and metadata, the round trip, bits per byte, and clear errors for a wrong vocabulary or a damaged file."""

from __future__ import annotations

import json
import math
import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from tests.test_train import TINY, records
from training.tokens import TokenSplit, decoder, open_splits

pytest.importorskip("tokenizers")
prepare = runpy.run_path(str(Path(__file__).resolve().parents[1] / "data" / "prepare.py"))["prepare"]

SEP = "<|endoftext|>"


def documents(folder: Path, n: int = 8) -> list[str]:
    """n text files in folder (non-ASCII, and one holding the separator's text literally); their texts in order."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = []
    for i in range(n):
        text = "".join(f"document {i}: the quick brown fox {j % 5} jumps over the lazy dog, héllo wörld. "
                       for j in range(20 + 3 * i))
        if i == 6:
            text += f"a literal {SEP} in the text\n"
        (folder / f"doc{i:02d}.txt").write_text(text, encoding="utf-8")
        texts.append(text)
    return texts


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[str]]:
    folder = tmp_path_factory.mktemp("corpus")
    return folder, documents(folder / "texts")


@pytest.mark.parametrize("tokenizer", ["bytes", "bpe"])
def test_prepare_writes_memmap_and_meta_that_round_trip(corpus, tmp_path, tokenizer):
    folder, texts = corpus
    out = tmp_path / tokenizer
    meta = prepare([str(folder / "texts")], out, tokenizer=tokenizer, vocab_size=300, val_fraction=0.25,
                   test_fraction=0.125)
    assert json.loads((out / "meta.json").read_text()) == meta
    assert meta["dtype"] == "uint16" and meta["separator"] == SEP and meta["source"]["files"] == 8
    by_split = {"train": texts[:5], "val": texts[5:7], "test": texts[7:]}  # 8 documents: 5 / 2 / 1, in order
    if tokenizer == "bytes":
        assert meta["tokenizer"] == "bytes" and meta["vocab_size"] == 257 and meta["separator_id"] == 256
    else:
        assert meta["tokenizer"] == "tokenizer.json" and (out / "tokenizer.json").is_file()
        assert meta["vocab_size"] <= 300
    decode = decoder(out)
    _, splits = open_splits(out)
    for (name, docs), split in zip(by_split.items(), splits):
        info = meta["splits"][name]
        assert info["documents"] == len(docs) and info["bytes"] == sum(len(t.encode()) for t in docs)
        raw = np.fromfile(out / info["file"], dtype="<u2")  # the file itself: raw uint16, nothing else
        assert len(raw) == info["tokens"] == len(split)
        assert (raw == meta["separator_id"]).sum() == len(docs) and raw[-1] == meta["separator_id"]
        assert decode(raw.tolist()) == "".join(t + SEP for t in docs)  # the literal separator text survives
        assert split[3:9].tolist() == raw[3:9].tolist() and str(split[3:9].dtype) == "torch.int64"
    if tokenizer == "bpe":  # tokens were fewer than bytes: that is what bits per byte corrects for
        assert meta["splits"]["train"]["tokens"] < meta["splits"]["train"]["bytes"]


def test_prepare_is_deterministic_and_refuses_too_few_documents(corpus, tmp_path):
    folder, _ = corpus
    a = prepare([str(folder / "texts")], tmp_path / "a", seed=3)
    b = prepare([str(folder / "texts")], tmp_path / "b", seed=3)
    assert a == b and (tmp_path / "a" / "train.bin").read_bytes() == (tmp_path / "b" / "train.bin").read_bytes()
    with pytest.raises(train.TrainError, match="too few"):
        prepare([str(folder / "texts" / "doc00.txt")], tmp_path / "c")


def tiny_tokens(directory: Path, out_dir: Path, **overrides) -> train.TrainConfig:
    settings = {**TINY, "seq_len": 32, "max_seq_len": 32, "batch_size": 2, "grad_accum": 1, "log_interval": 1,
                "eval_interval": 3, "eval_streams": 2, "sample_interval": 3, "prime_length": 8, "sample_length": 8}
    return train.TrainConfig(**{**settings, "data_tokens": str(directory), "out_dir": str(out_dir), **overrides})


def test_train_reads_token_files_and_logs_bits_per_byte(corpus, tmp_path, capsys):
    folder, texts = corpus
    out = tmp_path / "bpe"
    meta = prepare([str(folder / "texts")], out, tokenizer="bpe", vocab_size=300, val_fraction=0.25,
                   test_fraction=0.125)
    train.train(tiny_tokens(out, tmp_path / "run", max_steps=3))
    assert "--- continued by the model ---" in capsys.readouterr().out  # the sample decoded through the tokenizer
    # bits per byte = nats per token * tokens / bytes of the split / ln 2; counted here independently
    from tokenizers import Tokenizer

    bpe = Tokenizer.from_file(str(out / "tokenizer.json"))
    bpe.encode_special_tokens = True
    for name, docs in (("train", texts[:5]), ("val", texts[5:7])):
        tokens = sum(len(bpe.encode(t).ids) + 1 for t in docs)
        assert tokens == meta["splits"][name]["tokens"]
        ratio = tokens / sum(len(t.encode()) for t in docs)
        logged = [r for r in records(tmp_path / "run") if r["kind"] == name]
        assert len(logged) == (3 if name == "train" else 1)
        for r in logged:
            assert r["bpc"] == pytest.approx(r["loss"] * ratio / math.log(2), rel=1e-12)
            assert r["bpc"] < r["loss"] / math.log(2)  # fewer tokens than bytes: fewer bits per byte than per token
    assert train.build_model(tiny_tokens(out, tmp_path / "x")).config.num_tokens == meta["vocab_size"]
    # the final whole-split figure too: bits per token over the test split (as a plain tensor of
    # ids, which converts nothing) times tokens per byte
    cfg = tiny_tokens(out, tmp_path / "run", max_steps=3)
    model = train.build_model(cfg)
    model.load_state_dict(train.load_checkpoint(tmp_path / "run" / train.CHECKPOINT)["model"])
    test = train.load_splits(cfg)[1][2]
    per_token = train.evaluate_split(model, test[0:len(test)], cfg.eval_streams).bpc
    final = {r["kind"]: r for r in records(tmp_path / "run") if r["step"] == 3}
    assert final["test_full"]["bpc"] == pytest.approx(per_token * test.tokens_per_byte, rel=1e-6)
    assert final["test_full"]["bpc"] < per_token


def test_byte_data_bits_per_byte_is_bits_per_token():
    assert train.bits_per_byte(1.0, np.zeros(3)) == 1 / math.log(2)  # a plain byte split: tokens are bytes
    split = TokenSplit.__new__(TokenSplit)
    split.tokens_per_byte = 0.25
    assert train.bits_per_byte(2.0, split) == 0.5 / math.log(2)


def test_vocabulary_mismatch_and_damaged_token_file_name_the_file(corpus, tmp_path):
    folder, _ = corpus
    out = tmp_path / "bytes"
    prepare([str(folder / "texts")], out, val_fraction=0.25, test_fraction=0.125)
    with pytest.raises(train.TrainError, match=rf"differs from {out / 'meta.json'}'s \(257 tokens"):
        train.train(tiny_tokens(out, tmp_path / "run", num_tokens=256, max_steps=1))
    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    with open(damaged / "val.bin", "r+b") as f:
        f.truncate(f.seek(0, 2) - 3)
    with pytest.raises(train.TrainError, match=rf"{damaged / 'val.bin'}: .* truncated or corrupted"):
        train.train(tiny_tokens(damaged, tmp_path / "run2", max_steps=1))
    (damaged / "val.bin").write_bytes((out / "val.bin").read_bytes())
    np.full(len(np.fromfile(out / "train.bin", "<u2")), 9999, "<u2").tofile(damaged / "train.bin")  # ids past 257
    with pytest.raises(train.TrainError, match=rf"{damaged / 'train.bin'}: holds token id 9999, outside"):
        train.train(tiny_tokens(damaged, tmp_path / "run5", max_steps=1))
    (damaged / "meta.json").write_text("{not json")
    with pytest.raises(train.TrainError, match=rf"{damaged / 'meta.json'}: not a token directory"):
        tiny_tokens(damaged, tmp_path / "run3")
    with pytest.raises(train.TrainError, match="not both"):
        tiny_tokens(out, tmp_path / "run4", data="x")


def test_documents_of_a_token_directory_train_and_report_by_offset_in_tokens(corpus, tmp_path):
    """--documents on a BPE token directory: its own separator splits the documents; the final
    evaluation reads each from its start and reports by offset in tokens, every token once."""
    folder, _ = corpus
    out = tmp_path / "bpe"
    meta = prepare([str(folder / "texts")], out, tokenizer="bpe", vocab_size=300, val_fraction=0.25,
                   test_fraction=0.125)
    cfg = tiny_tokens(out, tmp_path / "run", max_steps=2, documents=True, sample_interval=0)
    train.train(cfg)
    final = {r["kind"]: r for r in records(tmp_path / "run") if r["step"] == 2}
    by_offset = final["test_by_offset"]
    assert by_offset["unit"] == "tokens"
    from training.evaluation import OFFSET_BUCKETS

    counted = sum(by_offset[name]["bytes"] for _, name in OFFSET_BUCKETS)
    assert counted == final["test_full"]["bytes"] == meta["splits"]["test"]["tokens"] - 1


def test_a_users_path_from_text_files_to_generated_text_under_torchrun(corpus, tmp_path):
    """The whole path a user takes: data/prepare.py turns a folder of text into a BPE token directory,
    train.py trains on it in a job of 2 processes (gloo, as torchrun starts it) reporting bits per byte,
    its final weights load with from_pretrained (equal to the checkpoint's), and generate's tokens
    decode through the directory's tokenizer."""
    from block_recurrent_transformer_pytorch import BlockRecurrentTransformer
    from tests.test_fsdp import _runs_worker
    from tests.test_train import flags, two_ranks

    folder, _ = corpus
    out = tmp_path / "bpe"
    meta = prepare([str(folder / "texts")], out, tokenizer="bpe", vocab_size=300, val_fraction=0.25,
                   test_fraction=0.125)
    cfg = tiny_tokens(out, tmp_path / "run", max_steps=3)
    with two_ranks(_runs_worker, [flags(cfg)]) as workers:
        for w in workers:
            w.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]

    logged = {r["kind"]: r for r in records(tmp_path / "run")}
    assert {"train", "val", "val_full", "test_full"} <= logged.keys()
    tokens_per_byte = meta["splits"]["val"]["tokens"] / meta["splits"]["val"]["bytes"]
    assert tokens_per_byte < 1  # so bits per byte are fewer than bits per token
    assert logged["val"]["bpc"] == pytest.approx(logged["val"]["loss"] * tokens_per_byte / math.log(2), rel=1e-12)
    checkpoint = train.load_checkpoint(tmp_path / "run" / train.CHECKPOINT)
    assert checkpoint["step"] == 3 and checkpoint["world_size"] == 2
    model = BlockRecurrentTransformer.from_pretrained(tmp_path / "run" / "final").eval()
    assert all(torch.equal(w, checkpoint["model"][k]) for k, w in model.state_dict().items())

    from tokenizers import Tokenizer

    bpe = Tokenizer.from_file(str(out / "tokenizer.json"))
    prime = torch.tensor([bpe.encode("the quick brown fox").ids])
    new = model.generate(prime, prime.shape[1] + 12, generator=torch.Generator().manual_seed(0))
    assert new.shape == (1, 12) and int(new.max()) < meta["vocab_size"]
    text = decoder(out)(new[0].tolist())
    assert isinstance(text, str) and text  # the tokens decode to text
