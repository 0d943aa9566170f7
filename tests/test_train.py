"""train.py on CPU with a tiny model and a tiny corpus: learning, exact resume, exact evaluation,
the enwik8 download, clear data errors, atomic checkpoints and gradient sync across processes."""

from __future__ import annotations

import builtins
import contextlib
import functools
import gzip
import http.server
import io
import json
import math
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import train
from block_recurrent_transformer_pytorch import BlockRecurrentTransformer

REPO = Path(__file__).resolve().parents[1]

# a model small enough for a CPU test, with every part live: 2 blocks per segment, 2 segments per sample
TINY = dict(dim=32, depth=2, heads=2, dim_head=16, max_seq_len=32, block_width=16, num_state_vectors=8,
            recurrent_layers=(2,), seq_len=64, batch_size=4, grad_accum=2, learning_rate=3e-3, min_lr=3e-4,
            warmup_steps=2, log_interval=2, eval_batches=2, eval_streams=3, eval_interval=0,
            sample_interval=0, checkpoint_interval=0, device="cpu")


def corpus(path: Path, size: int = 20_000) -> Path:
    """A learnable byte file: a sentence repeated, with a counter so it is not purely periodic."""
    text = b"".join(b"the quick brown fox %d jumps over the lazy dog. " % (i % 7) for i in range(size // 40 + 1))
    path.write_bytes(text[:size])
    return path


def tiny(tmp_path: Path, name: str = "run", **overrides) -> train.TrainConfig:
    """A tiny config training on a corpus in tmp_path, writing to tmp_path / name."""
    data = tmp_path / "corpus.txt"
    if not data.exists():
        corpus(data)
    return train.TrainConfig(**{**TINY, "data": str(data), "out_dir": str(tmp_path / name), **overrides})


def flags(cfg: train.TrainConfig) -> list[str]:
    """Command-line flags that reproduce cfg."""
    argv = []
    for key, value in asdict(cfg).items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, tuple):
            argv += [flag, *map(str, value)]
        elif value is not None:
            argv += [flag, str(value)]
    return argv


def records(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / train.METRICS).read_text().splitlines()]


# ---- training -------------------------------------------------------------------------------------


def test_short_run_learns_and_writes_its_outputs(tmp_path, capsys):
    cfg = tiny(tmp_path, max_steps=24, eval_interval=12, sample_interval=12, sample_length=8, prime_length=8)
    model = train.train(cfg)
    out = Path(cfg.out_dir)
    log = records(out)
    trained = [r["bpc"] for r in log if r["kind"] == "train"]
    assert trained[-1] < 0.6 * trained[0], trained
    val = [r["bpc"] for r in log if r["kind"] == "val"]
    assert len(val) == 2 and val[-1] < val[0]

    # the final pass over the whole splits: better than the untrained model, and logged
    _, (_, val_data, test_data) = train.load_splits(cfg)
    torch.manual_seed(cfg.seed)
    untrained, _ = train.evaluate(train.build_model(cfg), val_data, cfg.eval_streams)
    final = {r["kind"]: r for r in log if r["kind"].endswith("_full")}
    assert final["val_full"]["bpc"] < untrained - 2
    assert final["val_full"]["bytes"] == len(val_data) - 1 and final["test_full"]["bytes"] == len(test_data) - 1
    assert final["val_full"]["bpc"] == train.evaluate(model, val_data, cfg.eval_streams)[0]

    printed = capsys.readouterr().out
    assert "--- sample at step 12 ---" in printed and "test: " in printed
    assert (out / train.PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpt = train.load_checkpoint(out / train.CHECKPOINT)
    assert ckpt["step"] == 24 and ckpt["model_config"] == model.config.to_dict()
    assert ckpt["train_config"] == asdict(cfg)
    assert json.loads((out / "config.json").read_text())["model"]["dim"] == 32


def test_recurrent_layer_defaults_to_the_middle_one_whatever_the_depth(tmp_path, capsys):
    # --depth 2 without --recurrent-layers: layer 1 (the library's max(depth // 2, 1)), not a fixed 4
    cfg = replace(tiny(tmp_path, max_steps=2, depth=2), recurrent_layers=None)
    assert train.main(flags(cfg)) == 0
    assert "recurrent layers (1,)" in capsys.readouterr().out
    assert train.load_checkpoint(Path(cfg.out_dir) / train.CHECKPOINT)["model_config"]["recurrent_layers"] == [1]


def test_help_says_how_to_scale_the_schedule(capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "for short runs raise --learning-rate" in text and "lower --warmup-steps" in text
    assert "the middle layer, max(depth // 2, 1)" in text


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_stopped_and_resumed_run_matches_an_uninterrupted_one(tmp_path, capsys, cuda_graph):
    # dropout on memories and states draws python random numbers: resume must restore them too
    common = dict(max_steps=6, xl_memories_dropout=0.5, state_dropout=0.5, eval_interval=2, sample_interval=3,
                  sample_length=4, prime_length=4, cuda_graph=cuda_graph)
    train.train(tiny(tmp_path, "whole", **common))
    stopped = tiny(tmp_path, "parts", stop_at_step=3, **common)
    train.train(stopped)
    assert train.load_checkpoint(Path(stopped.out_dir) / train.CHECKPOINT)["step"] == 3
    # `--resume` alone continues with the saved flags
    assert train.main(["--resume", "--out-dir", stopped.out_dir]) == 0

    whole = train.load_checkpoint(tmp_path / "whole" / train.CHECKPOINT)
    parts = train.load_checkpoint(tmp_path / "parts" / train.CHECKPOINT)
    assert whole["step"] == parts["step"] == 6
    assert whole["model"].keys() == parts["model"].keys()
    for name, weight in whole["model"].items():
        assert torch.equal(weight, parts["model"][name]), name
    for a, b in zip(whole["optimizer"]["state"].values(), parts["optimizer"]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    # the log of the resumed run is the uninterrupted run's (but for the speed): the record at step 4
    # averages steps 3 and 4, though step 3 ran before the stop
    def logged(run: str) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in records(tmp_path / run)]

    assert logged("parts") == logged("whole")
    assert [r["step"] for r in logged("parts") if r["kind"] == "train"] == [2, 4, 6]

    # resuming the finished run evaluates it again, replacing (not repeating) its final records
    assert train.main(["--resume", "--out-dir", stopped.out_dir]) == 0
    assert logged("parts") == logged("whole")
    # a --max-steps the checkpoint has passed is an error, not a run that trains nothing
    assert train.main(["--resume", "--max-steps", "4", "--out-dir", stopped.out_dir]) == 1
    assert "--max-steps 4 is below the checkpoint's step 6" in capsys.readouterr().err
    assert train.main(["--resume", "--stop-at-step", "5", "--max-steps", "8", "--out-dir", stopped.out_dir]) == 1
    assert "--stop-at-step 5 is not after the checkpoint's step 6" in capsys.readouterr().err
    assert train.load_checkpoint(tmp_path / "parts" / train.CHECKPOINT)["train_config"]["max_steps"] == 6


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_checkpoints_the_current_step_and_the_run_resumes(tmp_path, signum):
    # long before the first periodic checkpoint (there are none): the signal must not lose the run
    cfg = tiny(tmp_path, max_steps=100_000, log_interval=1)
    out = Path(cfg.out_dir)
    run = subprocess.Popen([sys.executable, "train.py", *flags(cfg)], cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while not ((out / train.METRICS).exists() and (out / train.METRICS).read_text()):  # training has begun
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()
            time.sleep(0.05)
        run.send_signal(signum)
        _, err = run.communicate(timeout=120)
    finally:
        run.kill()
    name = signal.Signals(signum).name
    assert run.returncode == 128 + signum, err
    assert "Traceback" not in err
    step = train.load_checkpoint(out / train.CHECKPOINT)["step"]
    assert err.splitlines()[-1] == (f"stopped by {name} at step {step}; continue with: "
                                    f"python train.py --resume --out-dir {out}")
    assert [r["step"] for r in records(out) if r["kind"] == "train"] == list(range(1, step + 1))
    assert train.main(["--resume", "--stop-at-step", str(step + 2), "--out-dir", str(out)]) == 0
    assert train.load_checkpoint(out / train.CHECKPOINT)["step"] == step + 2


def test_a_second_signal_exits_at_once():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with train.StopSignals(announce=False) as stop:
        stop.armed = True
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.agreed(distributed=False) == signal.SIGINT  # the first only asks
        with pytest.raises(train.Interrupted) as raised:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs between two bytecodes of the main thread: at once
        assert raised.value.signum == signal.SIGTERM
        stop.armed = False
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # handlers given back


def test_a_fresh_run_refuses_to_overwrite_a_checkpoint(tmp_path, capsys):
    cfg = tiny(tmp_path, max_steps=1)
    train.train(cfg)
    before = (Path(cfg.out_dir) / train.CHECKPOINT).read_bytes()
    assert train.main(flags(cfg)) == 1
    assert "--resume" in capsys.readouterr().err
    assert (Path(cfg.out_dir) / train.CHECKPOINT).read_bytes() == before


def test_resume_on_changed_data_is_refused_unless_allowed(tmp_path, capsys):
    cfg = tiny(tmp_path, max_steps=4, stop_at_step=2)
    train.train(cfg)
    data, ckpt_path = Path(cfg.data), Path(cfg.out_dir) / train.CHECKPOINT
    changed = bytearray(data.read_bytes())
    changed[-1] ^= 1  # one bit of the test split: the same size, other bytes
    data.write_bytes(changed)
    capsys.readouterr()
    assert train.main(["--resume", "--out-dir", cfg.out_dir]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {data}: the data differ from the checkpoint's (20,000 bytes, CRC-32 ")
    assert "--allow-data-change" in err and err.count("\n") == 1
    assert train.load_checkpoint(ckpt_path)["step"] == 2

    assert train.main(["--resume", "--allow-data-change", "--out-dir", cfg.out_dir]) == 0
    ckpt = train.load_checkpoint(ckpt_path)
    assert ckpt["step"] == 4 and ckpt["data"] == {"bytes": 20_000, "crc32": zlib.crc32(bytes(changed))}
    # flags of one invocation are not the run's: neither the checkpoint nor config.json keeps them
    saved = json.loads((Path(cfg.out_dir) / "config.json").read_text())["train"]
    for stored in (saved, ckpt["train_config"]):
        assert not stored["resume"] and not stored["allow_data_change"] and stored["stop_at_step"] is None


# ---- evaluation -----------------------------------------------------------------------------------


def reference_nats(model: BlockRecurrentTransformer, tokens: torch.Tensor) -> float:
    """Summed next-byte loss of one stream, batch 1, from the logits, memories and states carried."""
    total, memories, states = 0.0, None, None
    for start in range(0, len(tokens) - 1, model.max_seq_len):
        chunk = tokens[start:start + model.max_seq_len + 1].long()[None]
        logits, memories, states = model(chunk[:, :-1], xl_memories=memories, states=states)
        total += F.cross_entropy(logits[0].double(), chunk[0, 1:], reduction="sum").item()
    return total


def test_evaluate_scores_every_byte_once_whatever_the_batching():
    torch.manual_seed(0)
    model = train.build_model(train.TrainConfig(**{**TINY, "data": "unused"})).eval()
    data = torch.randint(0, 256, (1000,), dtype=torch.uint8)
    # 999 predictions in 4 streams: 3 left for a head stream, and 249 per stream = 7 segments of 32 + 25
    bpc, count = train.evaluate(model, data, streams=4)
    assert count == 999
    length, head = divmod(999, 4)
    pieces = [data[:head + 1]] + [data[head + i * length:head + (i + 1) * length + 1] for i in range(4)]
    expected = sum(reference_nats(model, piece) for piece in pieces) / 999 / math.log(2)
    assert bpc == pytest.approx(expected, rel=1e-5)
    assert train.evaluate(model, data, streams=1)[0] == pytest.approx(reference_nats(model, data) / 999 / math.log(2),
                                                                      rel=1e-5)


def test_document_offsets_count_from_the_last_separator():
    data = torch.tensor([5, 6, 0, 7, 0, 0, 8, 9, 9], dtype=torch.uint8)
    # the split's first document counts from its start; a separator ends its document
    assert train.document_offsets(data, 0).tolist() == [0, 1, 2, 0, 1, 0, 0, 1, 2]


def test_bits_per_byte_by_offset_in_the_document_and_with_the_states_restarted():
    """The buckets partition the split's predictions (bytes add up, their byte-weighted mean is the
    split's figure) and each holds the bytes of its offsets; restarting the states every segment
    changes the figure of a model with a recurrent layer, and nothing without one."""
    torch.manual_seed(0)
    model = train.build_model(train.TrainConfig(**{**TINY, "data": "unused"})).eval()
    data = torch.randint(1, 256, (3000,), dtype=torch.uint8)
    data[[100, 1300, 2900]] = 0  # documents of 100, 1199, 1599 bytes, and a last one of 99
    result = train.evaluate_split(model, data, streams=3, separator=0)
    assert result.bpc == train.evaluate(model, data, streams=3)[0]
    counts = {name: count for name, (_, count) in result.by_offset.items()}
    offsets = train.document_offsets(data, 0)[1:]
    assert counts == {"0-1k": int((offsets < 1024).sum()), "1k-4k": int((offsets >= 1024).sum()),
                      "4k-16k": 0, "16k-64k": 0, "64k+": 0}
    weighted = sum(bpc * count for bpc, count in result.by_offset.values() if count)
    assert weighted / result.count == pytest.approx(result.bpc, rel=1e-9)
    reset = train.evaluate_split(model, data, streams=3, keep_states=False)
    assert reset.bpc != pytest.approx(result.bpc, rel=1e-6)
    stateless = train.build_model(train.TrainConfig(**{**TINY, "data": "unused", "recurrent_layers": ()})).eval()
    assert train.evaluate_split(stateless, data, 3, keep_states=False).bpc == train.evaluate(stateless, data, 3)[0]


def test_final_evaluation_reports_offsets_and_the_states_worth(tmp_path, capsys):
    cfg = tiny(tmp_path, max_steps=2, doc_separator=ord("\n"))
    train.train(cfg)
    final = {r["kind"]: r for r in records(Path(cfg.out_dir)) if r["step"] == 2}
    assert set(final["test_by_offset"]) >= {"0-1k", "64k+"} and final["val_by_offset"]["0-1k"]["bytes"] > 0
    assert final["test_states_reset"]["state_gain"] == pytest.approx(
        final["test_states_reset"]["bpc"] - final["test_full"]["bpc"])
    out = capsys.readouterr().out
    assert "test by offset in document (bytes; bits per byte): 0-1k" in out and "the recurrent state is worth" in out
    assert final["test_by_offset"]["64k+"]["bytes"] == 0 and "64k+ - (0)" in out and "nan" not in out  # none that long
    with pytest.raises(train.TrainError, match="--doc-separator must be a byte value in 0..255, got 256"):
        tiny(tmp_path, doc_separator=256)


def test_eval_only_of_a_checkpoint_is_repeatable(tmp_path):
    cfg = tiny(tmp_path, max_steps=2)
    train.train(cfg)
    ckpt = train.load_checkpoint(Path(cfg.out_dir) / train.CHECKPOINT)
    model = BlockRecurrentTransformer.from_config(ckpt["model_config"])
    model.load_state_dict(ckpt["model"])
    _, (_, _, test_data) = train.load_splits(cfg)
    first, second = (train.evaluate(model, test_data, cfg.eval_streams)[0] for _ in range(2))
    assert first == second

    # the command line, as a user runs it; the checkpoint's flags are used
    done = subprocess.run([sys.executable, "train.py", "--eval-only", "--out-dir", cfg.out_dir], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"test: {first:.4f} bpc over all {len(test_data) - 1:,} predicted bytes (step 2)" in done.stdout
    logged = [r for r in records(Path(cfg.out_dir)) if r["kind"] == "test_full"]
    # evaluated again, the step's result replaces the one the training run logged
    assert len(logged) == 1 and logged[-1]["bpc"] == pytest.approx(first, rel=1e-6)


# ---- data ----------------------------------------------------------------------------------------


@pytest.fixture
def zip_server(tmp_path):
    """A loopback HTTP server over tmp_path / 'served' holding enwik8.zip (1000 bytes unpacked); yields its URL."""
    served = tmp_path / "served"
    served.mkdir()
    payload = bytes(range(256)) * 3 + b"x" * 232
    with zipfile.ZipFile(served / "enwik8.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("enwik8", payload)
    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/enwik8.zip", payload
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_download_keeps_a_complete_zip_of_the_right_size(tmp_path, zip_server):
    url, payload = zip_server
    data_dir = tmp_path / "data"
    assert train.load_enwik8(data_dir, url, expected_size=len(payload)) == payload
    assert sorted(p.name for p in data_dir.iterdir()) == ["enwik8.zip"]
    # the next run reads the local copy, without the server
    assert train.load_enwik8(data_dir, "http://127.0.0.1:9/nowhere", expected_size=len(payload)) == payload


def test_download_of_the_wrong_size_leaves_nothing(tmp_path, zip_server):
    url, payload = zip_server
    data_dir = tmp_path / "data"
    with pytest.raises(train.TrainError, match=f"unpacked to {len(payload):,} bytes; enwik8 is exactly 1,001"):
        train.load_enwik8(data_dir, url, expected_size=len(payload) + 1)
    assert not data_dir.exists()


def test_a_failed_download_outside_the_repository_leaves_no_data_dir(tmp_path, zip_server, monkeypatch, capsys):
    # the default --data-dir is ./data, relative to wherever train.py is run; a missing file on the server
    url, _ = zip_server
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    argv = flags(replace(tiny(tmp_path), data=None, data_dir="data", out_dir=str(tmp_path / "run")))
    assert train.main(argv + ["--enwik8-url", url.replace("enwik8.zip", "missing.zip")]) == 1
    assert "could not download enwik8" in capsys.readouterr().err
    assert list(elsewhere.iterdir()) == []
    # nor the directories it had to create on the way
    with pytest.raises(train.TrainError, match="could not download"):
        train.load_enwik8(Path("new/data"), url.replace("enwik8.zip", "missing.zip"))
    assert list(elsewhere.iterdir()) == []


def test_no_network_fails_clearly_and_leaves_nothing(tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data_dir, out_dir = tmp_path / "data", tmp_path / "run"
    argv = flags(replace(tiny(tmp_path), data=None, out_dir=str(out_dir)))
    assert train.main(argv + ["--data-dir", str(data_dir), "--enwik8-url", f"http://127.0.0.1:{port}/enwik8.zip"]) == 1
    err = capsys.readouterr().err
    assert f"could not download enwik8 from http://127.0.0.1:{port}/enwik8.zip" in err
    assert f"put enwik8.zip (or the unpacked enwik8, or enwik8.gz) in {data_dir.resolve()}/" in err
    assert not data_dir.exists() and not out_dir.exists()


def test_local_enwik8_of_the_wrong_size_is_refused(tmp_path):
    (tmp_path / "enwik8").write_bytes(b"abc")
    with pytest.raises(train.TrainError, match="holds 3 bytes, enwik8 is exactly 100,000,000"):
        train.load_enwik8(tmp_path)


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "empty.gz"])
def test_unusable_data_path_is_a_clear_error(tmp_path, capsys, kind):
    path = tmp_path / ("nothing-here.gz" if kind == "empty.gz" else "nothing-here.txt")
    if kind == "directory":
        path.mkdir()
    elif kind.startswith("empty"):
        path.write_bytes(gzip.compress(b"") if kind == "empty.gz" else b"")
    cfg = tiny(tmp_path)
    assert train.main(flags(replace(cfg, data=str(path)))) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and "Traceback" not in err
    assert not Path(cfg.out_dir).exists()


def test_gz_and_zip_corpora_read_like_the_raw_file(tmp_path):
    raw = corpus(tmp_path / "c.txt", 5000).read_bytes()
    (tmp_path / "c.gz").write_bytes(gzip.compress(raw))
    with zipfile.ZipFile(tmp_path / "c.zip", "w") as archive:
        archive.writestr("c.txt", raw)
    assert train.read_bytes(tmp_path / "c.gz") == train.read_bytes(tmp_path / "c.zip") == raw
    assert [len(s) for s in train.split_bytes(raw)] == [4500, 250, 250]
    assert [len(s) for s in train.split_bytes(bytes(100_000_000))] == [90_000_000, 5_000_000, 5_000_000]


# ---- checkpoints ---------------------------------------------------------------------------------


def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    cfg = tiny(tmp_path, max_steps=3, checkpoint_interval=1)
    real_save, calls = torch.save, []

    def save_then_crash(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) < 2:
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: buffer.tell() // 2])  # half the bytes are on disk, then the "power cut"
        raise RuntimeError("simulated crash mid-save")

    monkeypatch.setattr(torch, "save", save_then_crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train.train(cfg)
    monkeypatch.undo()

    out = Path(cfg.out_dir)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("ckpt")) == ["ckpt.pt"]
    assert train.load_checkpoint(out / train.CHECKPOINT)["step"] == 1
    train.train(replace(cfg, resume=True))
    assert train.load_checkpoint(out / train.CHECKPOINT)["step"] == 3


class TornWrite:
    """A file whose write puts half the bytes on disk and then fails: a process killed mid-write."""

    def __init__(self, f) -> None:
        self.f = f

    def __enter__(self) -> "TornWrite":
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()

    def write(self, data):
        self.f.write(data[: len(data) // 2])
        self.f.flush()
        raise OSError("simulated kill mid-write")

    def __getattr__(self, name):
        return getattr(self.f, name)


def test_metrics_survive_a_kill_during_their_rewrite_and_a_torn_last_line(tmp_path, monkeypatch, capsys):
    cfg = tiny(tmp_path, max_steps=4, log_interval=1, stop_at_step=2)
    train.train(cfg)
    metrics = Path(cfg.out_dir) / train.METRICS
    before = metrics.read_bytes()

    # a resume rewrites metrics.jsonl (keeping the records up to its checkpoint): killed meanwhile,
    # the file must still hold every record, not a truncated part of them
    real_open = io.open

    def open_torn(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return TornWrite(f) if "w" in mode and Path(file).name.startswith(train.METRICS) else f

    monkeypatch.setattr(io, "open", open_torn)
    monkeypatch.setattr(builtins, "open", open_torn)
    with pytest.raises(OSError, match="simulated kill"):
        train.RunLog(Path(cfg.out_dir), enabled=True, until_step=1)
    monkeypatch.undo()
    assert metrics.read_bytes() == before

    # a kill while appending a record leaves a torn last line: the resume skips it, with a warning
    with open(metrics, "a") as f:
        f.write('{"step": 3, "kind": "tr')
    assert train.main(["--resume", "--out-dir", cfg.out_dir]) == 0
    assert "skipped its torn last line" in capsys.readouterr().err
    assert [r["step"] for r in records(Path(cfg.out_dir)) if r["kind"] == "train"] == [1, 2, 3, 4]


# ---- several processes ---------------------------------------------------------------------------


def _ddp_worker(rank: int, port: int, cfg: train.TrainConfig, result: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    model = train.train(cfg)
    torch.save(model.state_dict(), f"{result}.{rank}")


def _ddp_main_worker(rank: int, port: int, argv: list[str]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    sys.exit(train.main(argv))


@contextlib.contextmanager
def two_ranks(target: Callable, *args: Any) -> Iterator[list]:
    """target(rank, port, *args) started on 2 spawned processes (a free port for their job); a worker
    still alive on leaving is killed, so that a hung rank fails its test instead of hanging the session."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=target, args=(rank, port, *args)) for rank in range(2)]
    try:
        for w in workers:
            w.start()
        yield workers
    finally:
        for w in workers:
            if w.is_alive():
                w.kill()


def test_a_signal_to_one_rank_stops_both_after_the_same_step(tmp_path):
    cfg = tiny(tmp_path, max_steps=100_000, log_interval=1)
    out = Path(cfg.out_dir)
    with two_ranks(_ddp_main_worker, flags(cfg)) as workers:
        deadline = time.monotonic() + 120
        while not ((out / train.METRICS).exists() and (out / train.METRICS).read_text()):  # training has begun
            assert all(w.is_alive() for w in workers) and time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(workers[1].pid, signal.SIGTERM)  # rank 1 only, as when one node of a job is preempted
        for w in workers:
            w.join(timeout=120)
    # both ranks stopped by the agreed signal, after the step the checkpoint holds: a rank that
    # had gone on would have waited for the other in its next collective and been killed above
    assert [w.exitcode for w in workers] == [128 + signal.SIGTERM] * 2
    ckpt = train.load_checkpoint(out / train.CHECKPOINT)
    assert ckpt["step"] >= 1 and ckpt["world_size"] == 2


def train_on_two_processes(tmp_path: Path, cfg: train.TrainConfig) -> tuple[dict, dict]:
    """train.train(cfg) on 2 CPU processes (gloo); the weights each ended with."""
    result = str(tmp_path / "weights")
    with two_ranks(_ddp_worker, cfg, result) as workers:
        for w in workers:
            w.join(timeout=180)
    assert [w.exitcode for w in workers] == [0, 0]
    rank0, rank1 = (torch.load(f"{result}.{r}", weights_only=True) for r in range(2))
    return rank0, rank1


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_two_processes_keep_identical_weights(tmp_path, cuda_graph):
    # each rank samples different batches: only all-reduced gradients keep the weights equal
    # (by DDP, or by hand around TrainStep)
    cfg = tiny(tmp_path, max_steps=3, cuda_graph=cuda_graph)
    rank0, rank1 = train_on_two_processes(tmp_path, cfg)
    torch.manual_seed(cfg.seed)
    initial = train.build_model(cfg).state_dict()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert not all(torch.equal(rank0[k], initial[k]) for k in rank0)
    ckpt = train.load_checkpoint(Path(cfg.out_dir) / train.CHECKPOINT)
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    assert not torch.equal(ckpt["rng"][0]["data"], ckpt["rng"][1]["data"])


@pytest.mark.parametrize("config", [dict(bptt_segments=1), dict(bptt_segments=2, state_dropout=1.0)],
                         ids=["state-writes-never-trained", "states-always-dropped"])
def test_two_processes_train_when_a_step_leaves_parameters_without_gradient(tmp_path, config):
    # one block per segment: the state writes get no gradient (never; or, with bptt, when the next
    # segment drops the state). DDP must not wait for those gradients: it crashed at step 2
    cfg = tiny(tmp_path, max_steps=3, max_seq_len=16, block_width=16, **config)
    rank0, rank1 = train_on_two_processes(tmp_path, cfg)
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert train.load_checkpoint(Path(cfg.out_dir) / train.CHECKPOINT)["step"] == 3


def test_one_block_per_segment_warns_that_the_state_writes_never_train(tmp_path, capsys):
    train.train(tiny(tmp_path, max_steps=1, max_seq_len=16, block_width=16))
    err = " ".join(capsys.readouterr().err.split())
    assert "warning: states.0.to_write_q.weight, " in err and "never get a gradient" in err
    assert "the state a block writes is read only by the next segment, where the gradient is cut" in err
    assert "Use --max-seq-len 32 or more, or --bptt-segments 2 or more" in err
    # with the gradient carried across segments they train: no warning
    train.train(tiny(tmp_path, "bptt", max_steps=1, max_seq_len=16, block_width=16, bptt_segments=2))
    assert "never get a gradient" not in capsys.readouterr().err


def test_train_step_run_matches_the_wrapper_run(tmp_path):
    """--cuda-graph trains through TrainStep (eagerly on CPU: the function a GPU captures); with
    dropout and gradient accumulation it reaches the wrapper-and-backward run's weights."""
    common = dict(max_steps=4, grad_accum=2, xl_memories_dropout=0.5, state_dropout=0.5, eval_interval=0,
                  sample_interval=0)
    train.train(tiny(tmp_path, "wrapper", **common))
    train.train(tiny(tmp_path, "train_step", cuda_graph=True, **common))
    wrapper = train.load_checkpoint(tmp_path / "wrapper" / train.CHECKPOINT)["model"]
    step = train.load_checkpoint(tmp_path / "train_step" / train.CHECKPOINT)["model"]
    for name, weight in wrapper.items():
        torch.testing.assert_close(step[name], weight, rtol=1e-4, atol=1e-5, msg=name)
    assert [r["loss"] for r in records(tmp_path / "wrapper") if r["kind"] == "train"] == pytest.approx(
        [r["loss"] for r in records(tmp_path / "train_step") if r["kind"] == "train"], rel=1e-5)


def test_cuda_graph_flag_refuses_what_train_step_cannot_do(tmp_path):
    with pytest.raises(train.TrainError, match="--cuda-graph needs --bptt-segments 1"):
        tiny(tmp_path, cuda_graph=True, bptt_segments=2)


# ---- the fast path: TrainStep + torch.compile by default on CUDA --------------------------------


CUDA, CPU = torch.device("cuda", 0), torch.device("cpu")  # a device object needs no GPU


@pytest.mark.parametrize("device, flags_, expected, note", [
    (CPU, {}, (False, False), None),  # a CPU run is unchanged: eager, uncompiled, silent
    (CPU, dict(bptt_segments=2, knn_layers=(2,)), (False, False), None),
    (CPU, dict(cuda_graph=True), (True, False), None),  # TrainStep eagerly, as the CPU tests use it
    (CPU, dict(compile=True), (False, True), None),
    (CUDA, {}, (True, True), None),
    (CUDA, dict(cuda_graph=True), (True, True), None),
    (CUDA, dict(compile=False), (True, False), None),
    (CUDA, dict(cuda_graph=False, compile=False), (False, False), None),
    (CUDA, dict(cuda_graph=False), (False, False), "--no-cuda-graph trains eagerly and uncompiled"),
    (CUDA, dict(cuda_graph=False, compile=True), (False, True), None),
    (CUDA, dict(bptt_segments=2), (False, False),
     "without TrainStep's CUDA graphs and torch.compile (the fast path on a GPU): it needs --bptt-segments 1 (got 2"),
    (CUDA, dict(knn_layers=(2,)), (False, False), "it needs no kNN layers (got --knn-layers 2: TrainStep does not"),
    (CUDA, dict(activation_checkpointing=True), (False, False), "pass --cuda-graph --compile to try"),
    (CUDA, dict(fsdp=True), (False, False), "it needs no --fsdp (a CUDA graph cannot hold FSDP's all-gathers)"),
    (CUDA, dict(activation_checkpointing=True, cuda_graph=True, compile=True), (True, True), None),
    (CUDA, dict(bptt_segments=2, compile=True), (False, True),
     "training compiled, without TrainStep's CUDA graphs (the fast path on a GPU): TrainStep needs --bptt-segments 1"),
    (CUDA, dict(bptt_segments=2, compile=False), (False, False), "without TrainStep's CUDA graphs (the fast"),
])
def test_fast_path_decision(tmp_path, device, flags_, expected, note):
    fast = train.fast_path(tiny(tmp_path, **flags_), device)
    assert (fast.cuda_graph, fast.compile) == expected
    if note is None:
        assert fast.note is None
    else:
        assert note in fast.note and "\n" not in fast.note


def test_fast_path_flags_parse():
    assert train.TrainConfig().cuda_graph is None and train.TrainConfig().compile is None  # decided by the device
    assert train.parse_args([]) == {}
    assert train.parse_args(["--no-compile", "--no-cuda-graph"]) == dict(compile=False, cuda_graph=False)
    assert train.parse_args(["--compile", "--cuda-graph"]) == dict(compile=True, cuda_graph=True)
    cfg = train.resolve_config(train.parse_args(["--no-cuda-graph", "--data", "x"]))
    assert cfg.cuda_graph is False and cfg.compile is None


@pytest.mark.parametrize("flags, field, value, default", [
    (["--memory-kv-from-inputs"], "memory_kv_from_inputs", True, False),
    (["--xl-memory-blocks", "3"], "xl_memory_blocks", 3, 1),
    (["--token-shift"], "token_shift", True, False),
    (["--value-residual"], "value_residual", True, False),
    (["--unet-skips"], "unet_skips", True, False),
    (["--embedding-mixing"], "embedding_mixing", True, False),
    (["--attention-gate"], "attention_gate", True, False),
    (["--logit-softcap", "30"], "logit_softcap", 30.0, None),
])
def test_model_flags_reach_the_model(flags, field, value, default):
    cfg = train.resolve_config(train.parse_args([*flags, "--data", "x"]))
    assert getattr(train.build_model(replace(cfg, **TINY)).config, field) == value
    assert getattr(train.build_model(train.TrainConfig(**{**TINY, "data": "x"})).config, field) == default


@pytest.mark.parametrize("flag, kind", [("--rotary-dim", int), ("--logit-softcap", float), ("--muon-lr", float)])
def test_none_gives_an_optional_number_flag_its_default(flag, kind, capsys):
    field = flag[2:].replace("-", "_")
    assert train.parse_args([flag, "none"]) == train.parse_args([flag, "NONE"]) == {field: None}
    assert train.parse_args([flag, "3"]) == {field: kind(3)}
    with pytest.raises(SystemExit):
        train.parse_args([flag, "nothing"])
    assert f"argument {flag}: invalid {kind.__name__} value: 'nothing'" in capsys.readouterr().err


def test_muon_lr_none_is_no_muon_rate_for_an_adamw_run():
    assert train.resolve_config(train.parse_args(["--muon-lr", "none", "--data", "x"])).muon_lr is None


def test_none_takes_back_what_a_preset_sets():
    preset = ["--preset", "long-documents", "--data", "x", "--doc-separator", "0"]
    assert train.resolve_config(train.parse_args(preset)).rotary_dim == 32
    assert train.resolve_config(train.parse_args([*preset, "--rotary-dim", "none"])).rotary_dim is None  # all rotate


def test_a_bad_xl_memory_blocks_is_refused_naming_the_flag():
    cfg = train.resolve_config(train.parse_args(["--xl-memory-blocks", "0", "--data", "x"]))
    with pytest.raises(train.TrainError, match="xl_memory_blocks must be a positive int, got 0"):
        train.build_model(replace(cfg, **TINY))


def test_cpu_default_run_neither_compiles_nor_uses_train_step(tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("the CPU default must stay on the eager path")

    monkeypatch.setattr(train, "TrainStep", refuse)
    monkeypatch.setattr(torch.nn.Module, "compile", refuse)
    train.train(tiny(tmp_path, max_steps=2))
    printed = capsys.readouterr().out
    assert "device: cpu; output:" in printed
    assert "note:" not in printed and "compil" not in printed
    assert all(r["kind"] != "first_step" for r in records(tmp_path / "run"))


def test_compiled_training_compiles_once_and_evaluates_and_samples_eagerly(tmp_path, monkeypatch, capsys):
    """The training step's calls compile (here with a counting backend, as a GPU run would with
    inductor); the periodic evaluation, the samples and the final pass compile nothing more."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    real_compile = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: real_compile(self, backend=backend, **kw))
    compiled_at = {}
    for name in ("estimate_loss", "sample", "final_evaluation"):
        def counted(*args, _real=getattr(train, name), _name=name, **kwargs):
            before = len(graphs)
            result = _real(*args, **kwargs)
            assert len(graphs) == before, f"{_name} compiled the model again"
            compiled_at.setdefault(_name, before)
            return result
        monkeypatch.setattr(train, name, counted)

    torch._dynamo.reset()
    try:
        train.train(tiny(tmp_path, max_steps=4, eval_interval=2, sample_interval=2, sample_length=4, prime_length=4,
                         cuda_graph=True, compile=True))
    finally:
        torch._dynamo.reset()
    assert graphs and compiled_at.keys() == {"estimate_loss", "sample", "final_evaluation"}
    assert compiled_at["estimate_loss"] == len(graphs)  # all at the first steps; no recompilation after
    printed = capsys.readouterr().out
    assert "TrainStep (eager), compiled" in printed
    assert "compiling the training step, once (about a minute at the default size; minutes for a billion parameters)..." in printed
    assert "first step done in" in printed
    first = [r for r in records(tmp_path / "run") if r["kind"] == "first_step"]
    assert len(first) == 1 and first[0]["step"] == 1 and first[0]["seconds"] > 0
