"""bench/quality.py (issue 15's harness) end to end on a tiny model and corpus: it trains on documents
read row by row and evaluates held-out documents each from its start."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import quality  # noqa: E402


def test_a_tiny_quality_run_scores_every_held_out_byte_once(tmp_path):
    records = quality.main(["--tiny", "--model", "ours", "--tokens", "2048", "--eval-bytes", "3000",
                            "--eval-max-doc", "1500", "--out", str(tmp_path / "q.jsonl")])
    result = records[-1]
    assert result["kind"] == "result" and result["tokens"] >= 2048 and result["cut"] is False
    for evaluation in (result["eval"], result["nostate_eval"]):
        assert math.isfinite(evaluation["bpb"])
        # each evaluated document's bytes, every one predicted once, bucketed by its offset
        assert sum(b["bytes"] for b in evaluation["by_offset"].values()) == evaluation["bytes"] == 2 * 1500
        # per document, in the order evaluated: their byte-weighted mean is the overall figure
        per_document = evaluation["by_document"]
        assert len(per_document) == evaluation["documents"] == 2
        assert math.isclose(sum(per_document) / 2, evaluation["bpb"], abs_tol=2e-4)
    assert any(r["kind"] == "train" for r in records)


def test_each_documents_figure_is_that_documents_own_whatever_its_batch():
    """by_document[i] is docs[i]'s bits/byte: the same as evaluating that document alone, though the
    batch reads the documents longest first, several per call, padded to whole segments."""
    import torch

    torch.manual_seed(0)
    peer = quality.Ours(quality.parse_args(["--tiny", "--model", "ours"]), torch.device("cpu"))
    docs = [bytes((7 * i + n) % 90 + 32 for i in range(n)) for n in (70, 300, 130)]  # three lengths, unsorted
    together = quality.evaluate(peer, docs, batch=2)
    for doc, figure in zip(docs, together["by_document"]):
        alone = quality.evaluate(peer, [doc], batch=2)
        assert math.isclose(figure, alone["bpb"], abs_tol=2e-4)
    weights = [len(doc) for doc in docs]
    mean = sum(w * f for w, f in zip(weights, together["by_document"])) / sum(weights)
    assert math.isclose(mean, together["bpb"], abs_tol=2e-4)


def test_the_held_out_documents_are_the_first_non_empty_ones_up_to_the_budget():
    test = b"abc\0\0defg\0hi\0jk\0"
    assert quality.eval_documents(test, 5, None) == [b"abc", b"defg"]  # 3 < 5 bytes: one more, whole
    assert quality.eval_documents(test, 100, 2) == [b"ab", b"de", b"hi", b"jk"]  # cut at max_doc


def test_the_long_documents_preset_is_train_pys_model():
    """quality.py --preset long-documents builds the model of train.py's preset (one source for both)."""
    from training.config import PRESETS

    cfg = quality.ours_config(quality.parse_args(["--preset", "long-documents", "--tokens", "1e8"]))
    preset = PRESETS["long-documents"]
    model_keys = [key for key in preset if key in quality.MODEL_FIELDS]
    assert {"block_width", "rotary_dim", "recurrent_layers"} <= set(model_keys)
    for key in model_keys:
        assert cfg[key] == preset[key], key
    assert "batch_size" not in cfg and cfg["dim"] == 512 and cfg["depth"] == 6  # the seed's size, model fields only
    # and train.py builds the same model from it: every model field equal, those the preset leaves alone too
    from block_recurrent_transformer_pytorch import BlockRecurrentConfig
    from training.config import TrainConfig
    from training.model import build_model

    trained = build_model(TrainConfig(**preset, doc_separator=0)).config.to_dict()
    assert trained == BlockRecurrentConfig(**cfg).to_dict()
    nostate = quality.ours_config(quality.parse_args(["--preset", "long-documents", "--model", "ours_nostate",
                                                      "--tokens", "1e8"]))
    assert nostate["recurrent_layers"] == () and nostate["block_width"] == 1024


def test_the_xl_peer_takes_ours_attention_shape_from_the_preset():
    """xl's key/value heads follow ours' --preset: the seed's one (multi-query), the long-documents
    preset's four, so that the same --preset gives a like-for-like peer."""
    for preset, kv_heads in (("seed", 1), ("long-documents", 4)):
        args = quality.parse_args(["--model", "xl", "--preset", preset, "--tokens", "1e8"])
        _, decoder = quality.xl_kwargs(args, quality.ours_config(args))
        assert decoder["attn_kv_heads"] == kv_heads and decoder["heads"] == 8, preset


def test_the_xl_peer_takes_ours_feedforward_kind_and_width():
    """xl's feed-forward is ours' kind with ours' hidden units: GEGLU 1365 at dim 512 (x-transformers
    makes int(dim * ff_mult) of them), GELU 2048 under --set ff_glu=false."""
    for options, glu, hidden in (([], True, 1365), (["--set", "ff_glu=false"], False, 2048)):
        args = quality.parse_args(["--model", "xl", "--preset", "seed", "--tokens", "1e8", *options])
        _, decoder = quality.xl_kwargs(args, quality.ours_config(args))
        assert decoder["ff_glu"] is glu and int(512 * decoder["ff_mult"]) == hidden, options


def test_ours_unread_is_ours_with_its_state_reads_held_at_zero():
    """--model ours_unread: ours' initial weights at the same seed but the output projection's
    state-read columns, which start at zero and stay there through AdamW steps while the other
    weights learn; its output then never depends on the state it computes."""
    import torch

    def built(model: str):
        torch.manual_seed(3)
        return quality.Ours(quality.parse_args(["--tiny", "--emb-std", "0.02", "--model", model]), torch.device("cpu"))

    ours, unread = built("ours"), built("ours_unread")
    inner = ours.model.config.heads * ours.model.config.dim_head
    reader = unread.model.layers[ours.model.config.recurrent_layers[0] - 1][0].to_out.weight  # reads the state
    weights = ours.model.state_dict()
    for name, value in unread.model.state_dict().items():
        expected = weights[name].clone()
        if value.data_ptr() == reader.data_ptr():
            expected[:, inner:] = 0
        torch.testing.assert_close(value, expected, rtol=0, atol=0, msg=name)
    assert (reader[:, inner:] == 0).all() and (reader[:, :inner] != 0).any()

    for optimizer in ("adamw", "muon"):  # Muon's orthogonalised update keeps a zero column of the gradient at zero
        optimizers = quality.make_optimizers(unread.model, quality.parse_args(["--tiny", "--optimizer", optimizer]),
                                             torch.device("cpu"))
        before = reader.detach().clone()
        for seed in range(2):
            unread.model.train()
            unread.wrapper(torch.randint(0, 256, (2, 129), generator=torch.Generator().manual_seed(seed))).backward()
            for opt in optimizers:
                opt.step()
                opt.zero_grad()
        assert (reader[:, inner:] == 0).all() and not torch.equal(reader[:, :inner], before[:, :inner]), optimizer

    model = unread.model.eval()
    x = torch.randint(0, 256, (2, model.config.max_seq_len))  # two blocks: the second reads the first's state
    _, _, states = model(torch.randint(0, 256, (2, model.config.max_seq_len)))
    torch.testing.assert_close(model(x, states=states)[0], model(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("model", ["ours", "ours_unread"])
def test_the_training_records_say_what_the_states_weights_do(tmp_path, model):
    """Each training record of ours carries the state reads' share of the reading layer's output
    projection (about 1 at the start, exactly 0 held at zero) and the fixed gate's mean retention."""
    records = quality.main(["--tiny", "--model", model, "--tokens", "2048", "--log-every", "1", "--eval-bytes", "1500",
                            "--eval-max-doc", "1500", "--out", str(tmp_path / "q.jsonl")])
    train = [r for r in records if r["kind"] == "train"]
    assert len(train) == 4
    for record in train:
        (ratio,), (retention,) = record["state_reads_weight"], record["gate_retention"]
        assert (ratio == 0) if model == "ours_unread" else (0.5 < ratio < 2)
        assert 0.4 < retention < 0.6  # the seed's gate starts at 0.5 and moves little in 4 steps


def test_the_training_records_carry_each_layers_gate_norm(tmp_path):
    """With attention_gate, each training record carries every layer's largest gate norm, 0 at the start and
    moved by training."""
    records = quality.main(["--tiny", "--model", "ours", "--tokens", "2048", "--log-every", "1", "--eval-bytes", "1500",
                            "--eval-max-doc", "1500", "--set", "attention_gate=true",
                            "--out", str(tmp_path / "q.jsonl")])
    train = [r for r in records if r["kind"] == "train"]
    assert records[0]["config"]["attention_gate"] is True
    assert all(len(r["head_gate_norm"]) == records[0]["config"]["depth"] for r in train)
    assert all(norm > 0 for norm in train[-1]["head_gate_norm"])


def test_the_training_records_carry_the_learned_mixes(tmp_path):
    """With value_residual, unet_skips and embedding_mixing, each training record carries every layer's mixes and
    the skips' weights as they stand, which training moves from where they start."""
    records = quality.main(["--tiny", "--model", "ours", "--tokens", "2048", "--log-every", "1", "--eval-bytes", "1500",
                            "--eval-max-doc", "1500", "--lr", "1e-2", "--set", "value_residual=true", "--set",
                            "unet_skips=true", "--set", "embedding_mixing=true", "--out", str(tmp_path / "q.jsonl")])
    train = [r for r in records if r["kind"] == "train"]
    depth = records[0]["config"]["depth"]
    last = train[-1]
    assert len(last["value_mix"]) == len(last["embedding_mix"]) == depth - 1
    assert len(last["skip_weights"]) == depth // 2
    assert all(len(pair) == 2 for pair in last["embedding_mix"] + last["value_mix"])
    assert last["embedding_mix"] != [[1.0, 0.0]] * (depth - 1)  # learned: moved from the plain stream


def test_a_run_past_its_stop_after_time_is_cut_and_still_evaluated(tmp_path):
    """A budget far beyond the time a run has: --stop-after ends training early, the held-out
    documents are still evaluated, and the result says the run was cut."""
    records = quality.main(["--tiny", "--model", "ours", "--tokens", "1e9", "--stop-after", "0.5", "--eval-bytes",
                            "2000", "--eval-max-doc", "1000", "--no-nostate-eval", "--out", str(tmp_path / "q.jsonl")])
    result = records[-1]
    assert result["kind"] == "result" and result["cut"] is True and result["tokens"] < 1e9
    assert math.isfinite(result["eval"]["bpb"]) and result["eval"]["bytes"] == 2 * 1000


def test_the_offset_plot_draws_a_run(tmp_path):
    import plot_quality  # noqa: E402  (bench/, on the path above)

    records = tmp_path / "q.jsonl"
    quality.main(["--tiny", "--model", "ours", "--tokens", "1024", "--eval-bytes", "2000", "--eval-max-doc", "1000",
                  "--no-nostate-eval", "--out", str(records)])
    plot_quality.main([str(tmp_path / "plot.png"), f"{records}=tiny"])
    assert (tmp_path / "plot.png").stat().st_size > 1000


def test_the_offset_plot_averages_runs_picked_from_a_packed_file(tmp_path):
    """A line may be the mean of several runs, each picked by impl from a file holding several."""
    import json

    import plot_quality  # noqa: E402  (bench/, on the path above)

    def result(impl: str, bpb: float) -> dict:
        by_offset = {"0k-1k": dict(bpb=bpb + 0.1), "1k-4k": dict(bpb=bpb), "64k+": dict(bpb=None)}
        return dict(kind="result", impl=impl, eval=dict(bpb=bpb, by_offset=by_offset))

    packed = tmp_path / "quality_all.jsonl"
    packed.write_text("".join(json.dumps(r) + "\n" for r in (result("quality_0_ours", 0.9), result("quality_1_xl", 1.5),
                                                                result("quality_2_ours", 0.8))))
    impls, names, means, overall = plot_quality.line_of([f"{packed}@quality_0_ours", f"{packed}@quality_2_ours"])
    assert impls == "quality_0_ours+quality_2_ours" and names == ["0k-1k", "1k-4k"]  # a bucket none has: left out
    assert [round(m, 6) for m in means] == [0.95, 0.85] and round(overall, 6) == 0.85
    plot_quality.main([str(tmp_path / "mean.png"), f"{packed}@quality_0_ours+{packed}@quality_2_ours=ours, 2 seeds",
                       f"{packed}@quality_1_xl"])
    assert (tmp_path / "mean.png").stat().st_size > 1000


def test_the_xl_peer_masks_a_rows_memories_from_its_new_documents_start_on():
    """x-transformers keeps one memory tensor per layer for the whole batch, so the harness resets a
    row by masking: where a row starts a new document it sees none of its carried memories, and
    the memories it leaves hold only that document's positions, also when they outlast a segment."""
    import torch

    segment, mem_len = 4, 6
    mask, valid = quality.memory_mask(None, torch.tensor([True, False]), segment, mem_len)
    assert mask is None and valid.tolist() == [[True] * 4, [True] * 4]  # no memories yet: 4 positions, all new
    mask, valid = quality.memory_mask(valid, torch.tensor([False, True]), segment, mem_len)
    assert mask.tolist() == [[True] * 4, [False] * 4]  # row 1 starts a document: hidden from it
    assert valid.tolist() == [[True] * 6, [False, False, True, True, True, True]]  # the last 6 of 4 + 4
    mask, valid = quality.memory_mask(valid, torch.tensor([False, False]), segment, mem_len)
    assert mask.tolist() == [[True] * 6, [False, False, True, True, True, True]]  # the old document stays hidden
    assert valid.tolist() == [[True] * 6, [True] * 6]


def test_the_xl_peers_compiled_forward_compiles_nothing_after_the_untimed_steps(monkeypatch):
    """One segment a step (the XL's shape in every comparison): the compiled forward must get
    memories of one layout from every step, so that it compiles within the untimed steps and never
    again. The first step's memories once had other strides than the later ones', and the first
    timed step compiled a second graph (26 s of a timed run on an H200)."""
    import torch

    compiled_by_step = []
    build, train_step = quality.XL.__init__, quality.XL.train_step

    def build_compiled(self, args, device):
        build(self, args, device)
        # as on a GPU (the harness compiles only there); dynamo's guards decide what recompiles, before any
        # backend runs, so aot_eager finds what inductor would, without a C++ compiler and in a third of the time
        self.forward = torch.compile(self.model, backend="aot_eager")

    def counted_step(self, batch):
        loss = train_step(self, batch)
        compiled_by_step.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
        return loss

    monkeypatch.setattr(quality.XL, "__init__", build_compiled)
    monkeypatch.setattr(quality.XL, "train_step", counted_step)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    try:
        result = quality.main(["--tiny", "--model", "xl", "--tokens", "8192", "--batch", "4", "--seq", "128",
                               "--seg", "128", "--mem", "128", "--mem-dropout", "0", "--eval-bytes", "1000"])[-1]
    finally:  # leave no compiled graph or count to the tests after this one
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
    untimed = result["untimed_steps"]
    assert untimed == 2 and len(compiled_by_step) == result["steps"] == 16
    assert compiled_by_step[untimed - 1] >= 1  # the compiled forward ran within the untimed steps
    assert compiled_by_step[-1] == compiled_by_step[untimed - 1], compiled_by_step


def _quality_gpu(tmp_path, **env):
    import os
    import subprocess

    script = Path(__file__).resolve().parents[1] / "bench" / "quality_gpu.sh"
    env = {**os.environ, "OUT": str(tmp_path), "NGPU": "2", **env}
    return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=120)


def test_quality_gpu_puts_each_run_on_the_gpus_named():
    """GPUS="3 5" spreads runs over GPUs 3 and 5 in turn (the runs themselves fail at once here: an
    unknown flag), so two invocations can share a machine."""
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        done = _quality_gpu(Path(out), GPUS="3 5", RUNS="ours:--no-such-flag ; xl:--no-such-flag ; ours:--no-such-flag")
    assert done.returncode == 1
    assigned = [line for line in done.stdout.splitlines() if line.startswith("run ") and " on GPU " in line]
    assert [line.split(":")[0] for line in assigned] == ["run 0 on GPU 3", "run 1 on GPU 5", "run 2 on GPU 3"]


def test_quality_gpu_runs_every_run_once_per_seed():
    """SEEDS="4 9": each run of RUNS twice, with --seed 4 then --seed 9, spread over the GPUs in turn."""
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        done = _quality_gpu(Path(out), GPUS="0 1", SEEDS="4 9", RUNS="ours:--no-such-flag ; xl")
    assigned = [line for line in done.stdout.splitlines() if line.startswith("run ") and " on GPU " in line]
    assert [line.split(":")[0] for line in assigned] == ["run 0 on GPU 0", "run 1 on GPU 1", "run 2 on GPU 0",
                                                         "run 3 on GPU 1"]
    assert [line.split(": ", 1)[1].split()[0] for line in assigned] == ["ours", "xl", "ours", "xl"]
    assert [line.split()[-2:] for line in assigned] == [["--seed", "4"]] * 2 + [["--seed", "9"]] * 2


def test_quality_gpu_refuses_bad_gpus_and_timeouts(tmp_path):
    for env, named in ((dict(GPUS="1,2"), "GPUS"), (dict(RUN_TIMEOUT="60", EVAL_MARGIN="60"), "RUN_TIMEOUT"),
                       (dict(RUN_TIMEOUT="9.5"), "RUN_TIMEOUT"), (dict(SEEDS="1,2"), "SEEDS")):
        done = _quality_gpu(tmp_path, RUNS="ours:", **env)
        assert done.returncode == 2 and named in done.stderr, (env, done.stderr)
        assert "run 0" not in done.stdout


def test_document_mix_counts_exactly_the_tokens_the_rows_read():
    """bench/document_mix.py's count per document adds up to the labelled positions the same streams
    yield when read directly, documents still open at the end counted only as far as read."""
    import torch

    import document_mix
    from training.documents import DocumentStreams

    data = torch.tensor(list(b"\0" + b"\0".join(bytes([65 + i]) * (7 * i + 3) for i in range(12)) + b"\0"),
                        dtype=torch.uint8)

    def streams() -> DocumentStreams:
        return DocumentStreams(data, 0, rows=3, segment=8, shuffle=True, seed=0)

    read = document_mix.tokens_by_document(streams(), steps=40)
    direct = streams()
    labelled = sum(int((direct.next(1).labels != -100).sum()) for _ in range(40))
    assert sum(read.values()) == labelled
    # two segments a step (quality.py's XL with --seg half of --seq): the same streams, read as it reads them
    read = document_mix.tokens_by_document(streams(), steps=20, segments=2)
    direct = streams()
    assert sum(read.values()) == sum(int((direct.next(2).labels != -100).sum()) for _ in range(20))
    assert all(0 < tokens <= int(direct.lengths[j]) * 40 for j, tokens in read.items())


def test_document_mix_counts_the_documents_rows_start():
    """Every document a row takes starts with a reset: over a run too short to read a document twice,
    the documents started are the documents read, and a step counts as one with a start when any
    row's reset is set in it."""
    import torch

    import document_mix
    from training.documents import DocumentStreams

    data = torch.tensor(list(b"\0" + b"\0".join(bytes([65 + i]) * (7 * i + 3) for i in range(12)) + b"\0"),
                        dtype=torch.uint8)

    def streams() -> DocumentStreams:
        return DocumentStreams(data, 0, rows=3, segment=8, shuffle=True, seed=0)

    steps_with_start, started = document_mix.documents_started(streams(), steps=6)
    assert started == len(document_mix.tokens_by_document(streams(), steps=6)) > 3
    direct = streams()
    assert steps_with_start == sum(bool(direct.next(1).reset.any()) for _ in range(6)) < 6


def test_a_knn_model_trains_through_the_wrapper_with_its_store_carried(tmp_path):
    """--set knn_layers: TrainStep does not carry a kNN store, so ours trains through the wrapper; the
    store goes from step to step with the memories, through memory dropout too, holding every token of
    the row's document so far but the XL memory's block; and every held-out byte is still scored once."""
    out = tmp_path / "q.jsonl"
    args = ["--tiny", "--model", "ours", "--set", "knn_layers=2,", "--set", "knn_memory_size=256", "--tokens", "4096",
            "--eval-bytes", "3000", "--eval-max-doc", "1500", "--out", str(out), "--batch", "2", "--seq", "128"]
    peer = quality.Ours(quality.parse_args(args), quality.torch.device("cpu"))
    assert peer.step_fn is None
    records = quality.main(args)
    result = records[-1]
    assert result["tokens"] >= 4096 and math.isfinite(result["eval"]["bpb"])
    assert sum(b["bytes"] for b in result["eval"]["by_offset"].values()) == result["eval"]["bytes"] == 2 * 1500

    # documents of 1000 bytes, each row within its first one
    data = quality.torch.tensor(([7] * 1000 + [quality.corpora.SEPARATOR]) * 4, dtype=quality.torch.uint8)
    streams = quality.DocumentStreams(data, quality.corpora.SEPARATOR, 2, peer.seg, shuffle=False, seed=0,
                                      ignore_index=quality.IGNORE)
    peer.model.train()
    peer.wrapper.xl_memories_dropout = 1.0  # every segment: the store must survive it
    for _ in range(4):  # 4 steps of 2 segments of 64 tokens: 512 tokens a row, within its first document
        peer.train_step(streams.next(2))
    written = peer.carry[0].knn.position - peer.carry[0].knn.start  # since the row's document started
    assert written.tolist() == [512 - peer.model.config.block_width] * 2  # the XL memory holds the newest block


@pytest.mark.parametrize("ratio", [0.1, 0.0])
def test_cosine_schedule_warms_up_then_ends_at_its_floor(ratio):
    args = quality.parse_args(["--tokens", "1e6", "--lr", "1e-3", "--warmup", "10", "--min-lr-ratio", str(ratio)])
    assert quality.learning_rate(args, 0, 0.0) == pytest.approx(1e-4)
    assert quality.learning_rate(args, 10, 0.0) == pytest.approx(1e-3)
    assert quality.learning_rate(args, 50, 0.5) == pytest.approx(1e-3 * (ratio + (1 - ratio) / 2))
    assert quality.learning_rate(args, 99, 1.0) == pytest.approx(1e-3 * ratio)


def test_wsd_schedule_holds_the_peak_then_decays_linearly_to_its_floor():
    args = quality.parse_args(["--tokens", "1e6", "--lr", "1e-3", "--warmup", "10", "--schedule", "wsd",
                               "--decay-frac", "0.4", "--min-lr-ratio", "0.1"])
    assert quality.learning_rate(args, 0, 0.0) == pytest.approx(1e-4)  # the warmup as cosine's
    for progress in (0.05, 0.3, 0.6):  # held until the last 40% of the budget
        assert quality.learning_rate(args, 50, progress) == pytest.approx(1e-3)
    assert quality.learning_rate(args, 50, 0.8) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))  # half way down
    assert quality.learning_rate(args, 99, 1.0) == pytest.approx(1e-4)
    assert quality.learning_rate(args, 99, 1.2) == pytest.approx(1e-4)  # a clock past its budget stays at the floor


@pytest.mark.parametrize("fraction", ["0", "1.5"])
def test_a_decay_fraction_outside_zero_to_one_is_refused(capsys, fraction):
    with pytest.raises(SystemExit):
        quality.parse_args(["--tokens", "1e6", "--schedule", "wsd", "--decay-frac", fraction])
    assert f"--decay-frac must lie in (0, 1] (a share of the budget), got {float(fraction)}" in capsys.readouterr().err


def test_a_min_lr_ratio_outside_zero_to_one_is_refused(capsys):
    with pytest.raises(SystemExit):
        quality.parse_args(["--tokens", "1e6", "--min-lr-ratio", "1.5"])
    assert "--min-lr-ratio must lie in [0, 1] (a share of --lr), got 1.5" in capsys.readouterr().err


def test_muon_trains_the_hidden_matrices_and_adamw_everything_else():
    """--optimizer muon: every nn.Linear weight but the output head's goes to Muon at --muon-lr (its
    group's lr_scale), each other parameter (embeddings, the head, norms, the initial states) to AdamW,
    and none to both or neither."""
    import torch
    from torch import nn

    args = quality.parse_args(["--tiny", "--optimizer", "muon", "--lr", "1e-3", "--muon-lr", "4e-3"])
    model = quality.Ours(args, torch.device("cpu")).model
    adamw, muon = quality.make_optimizers(model, args, torch.device("cpu"))
    assert isinstance(adamw, torch.optim.AdamW) and isinstance(muon, torch.optim.Muon)
    in_muon = [p for group in muon.param_groups for p in group["params"]]
    in_adamw = [p for group in adamw.param_groups for p in group["params"]]
    linear = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    assert {id(p) for p in in_muon} == linear - {id(model.to_logits.weight)} and len(in_muon) > 10
    assert sorted(map(id, in_muon + in_adamw)) == sorted(id(p) for p in model.parameters())
    assert id(model.token_emb.weight) in {id(p) for p in in_adamw}
    assert [group["lr_scale"] for group in muon.param_groups] == [pytest.approx(4.0)]
    assert [group["lr_scale"] for group in adamw.param_groups] == [1.0, 1.0]
    alone = quality.make_optimizers(model, quality.parse_args(["--tiny"]), torch.device("cpu"))  # the default
    assert len(alone) == 1
    assert sum(len(group["params"]) for group in alone[0].param_groups) == len(list(model.parameters()))
    assert "output_splits" not in muon.param_groups[0]  # whole matrices unless --muon-split-qkv
    split = quality.make_optimizers(model, quality.parse_args(["--tiny", "--optimizer", "muon", "--muon-split-qkv"]),
                                    torch.device("cpu"))[1].param_groups[0]
    fused = [rows for rows in split["output_splits"] if len(rows) > 1]
    assert len(split["output_splits"]) == len(in_muon) and len(fused) == model.config.depth + 2  # to_qkv; the state's


def test_scalar_lr_gives_ours_mixing_weights_an_adamw_group_at_their_own_rate(capsys):
    """--scalar-lr: ours' mixing weights (here the value residual's and U-net skips') in a third AdamW group
    whose lr_scale is --scalar-lr / --lr, never decayed; a model without them (ours without the options, the XL),
    or a rate not positive, refused by name."""
    import torch

    from training.optimizer import mixing_weights

    flags = ["--tiny", "--lr", "1e-3", "--set", "value_residual=true", "--set", "unet_skips=true"]
    args = quality.parse_args(flags + ["--scalar-lr", "2e-2"])
    model = quality.Ours(args, torch.device("cpu")).model
    (adamw,) = quality.make_optimizers(model, args, torch.device("cpu"))
    assert [group["lr_scale"] for group in adamw.param_groups] == [1.0, 1.0, pytest.approx(20.0)]
    assert [id(p) for p in adamw.param_groups[2]["params"]] == [id(p) for p in mixing_weights(model)]
    depth = model.config.depth  # one U-net weight (depth // 2 entries), one value mix a layer above the first
    assert adamw.param_groups[2]["weight_decay"] == 0.0 and len(adamw.param_groups[2]["params"]) == 1 + depth - 1
    for given, message in ((["--tiny", "--scalar-lr", "2e-2"],
                            "this run's model has none (--model ours, --preset tiny)"),
                           (flags + ["--model", "xl", "--scalar-lr", "2e-2"], "this run's model has none (--model xl"),
                           (flags + ["--scalar-lr", "-1"], "--scalar-lr must be positive, got -1.0")):
        with pytest.raises(SystemExit):
            quality.parse_args(given)
        assert message in capsys.readouterr().err


def test_a_tiny_run_trains_with_muon(tmp_path):
    # 16 steps, the first 2 warming up; the first four against the last four: a single step's loss moves with its batch,
    # and the tiny corpus (this repository's files) changes with every commit
    records = quality.main(["--tiny", "--model", "ours", "--optimizer", "muon", "--muon-lr", "2e-3", "--tokens", "8192",
                            "--warmup", "2", "--log-every", "1", "--eval-bytes", "1500", "--eval-max-doc", "1000",
                            "--out", str(tmp_path / "q.jsonl")])
    train = [r["bpb"] for r in records if r["kind"] == "train"]
    assert len(train) == 16 and sum(train[-4:]) / 4 < sum(train[:4]) / 4 - 0.1
    assert math.isfinite(records[-1]["eval"]["bpb"])
    assert records[0]["args"]["optimizer"] == "muon" and records[0]["args"]["muon_lr"] == 2e-3


@pytest.mark.parametrize("flags, message", [
    (["--muon-lr", "1e-3"], "--muon-lr is Muon's rate: give it with --optimizer muon (got --optimizer adamw)"),
    (["--optimizer", "muon", "--muon-lr", "0"], "--muon-lr must be positive, got 0.0"),
    (["--muon-split-qkv"], "--muon-split-qkv is Muon's: give it with --optimizer muon (got --optimizer adamw)"),
    (["--model", "xl", "--optimizer", "muon", "--muon-split-qkv"],
     "--muon-split-qkv is for ours, ours_nostate and ours_unread: the XL's queries, keys and values are separate"),
])
def test_bad_optimizer_flags_are_refused(capsys, flags, message):
    with pytest.raises(SystemExit):
        quality.parse_args(["--tiny", *flags])
    assert message in capsys.readouterr().err


def test_muon_takes_adamws_rate_unless_given_its_own():
    assert quality.parse_args(["--tiny", "--optimizer", "muon", "--lr", "2e-3"]).muon_lr == 2e-3


@pytest.mark.parametrize("model,optimizer", [("ours", "adamw"), ("ours_unread", "adamw"), ("ours", "muon")])
def test_growing_the_segment_carries_weights_moments_and_documents_on(model, optimizer):
    """--grow-at: the model that takes the longer segment has the same weights and computes the same
    function (no parameter depends on max_seq_len); the optimiser's moments follow the weights; the
    reader's first rows go on reading where they were, in the same order of documents; an
    ours_unread run's state-read columns stay at zero through the steps after it."""
    import torch

    torch.manual_seed(0)
    args = quality.parse_args(["--tiny", "--model", model, "--grow-at", "3", "--grow-batch", "2", "--grow-seq", "256",
                               "--optimizer", optimizer])
    device = torch.device("cpu")
    peer = quality.Ours(args, device)
    optimizers = quality.make_optimizers(peer.model, args, device)
    data = torch.randint(0, 255, (20_000,), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    data[torch.arange(300, 20_000, 700)] = 255  # documents of 700 bytes
    streams = quality.DocumentStreams(data, 255, args.batch, peer.seg, shuffle=True, seed=0)
    for _ in range(2):
        peer.train_step(streams.next(args.seq // peer.seg))
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=False)
    old = peer.model

    def moments_of(p):  # AdamW's first moment, or Muon's momentum
        state = next(opt.state[p] for opt in optimizers if p in opt.state)
        return state["exp_avg"] if "exp_avg" in state else state["momentum_buffer"]

    moments = {name: moments_of(p).clone() for name, p in old.named_parameters()}
    reading = (list(streams.piece[:2]), list(streams.offset[:2]), streams.queue, streams.epoch)
    x = torch.randint(0, 256, (2, 256))
    memories = states = None
    expected = []  # the old model, segment by segment with memories and states carried
    for segment in x.split(old.max_seq_len, dim=1):
        logits, memories, states = old.eval()(segment, xl_memories=memories, states=states)
        expected.append(logits)
    expected = torch.cat(expected, dim=1)

    params = quality.grow(peer, optimizers, streams, args.grow_batch, args.grow_seq)

    assert peer.model is not old and peer.model.max_seq_len == peer.seg == 256 and peer.carry == (None, None)
    torch.testing.assert_close(peer.model.eval()(x)[0], expected, rtol=1e-5, atol=1e-5)
    for name, p in peer.model.named_parameters():
        torch.testing.assert_close(moments_of(p), moments[name], rtol=0, atol=0, msg=name)
    assert sorted(id(p) for opt in optimizers for group in opt.param_groups for p in group["params"]) == sorted(
        id(p) for p in params)
    assert (list(streams.piece), list(streams.offset), streams.queue, streams.epoch) == reading
    assert (streams.rows, streams.segment) == (2, 256)

    batch = streams.next(1)
    assert batch.inputs.shape == (2, 256)
    peer.model.train()
    peer.train_step(batch)
    for opt in optimizers:
        opt.step()
    reader = peer.model.layers[peer.model.config.recurrent_layers[0] - 1][0].to_out.weight
    inner = peer.model.config.heads * peer.model.config.dim_head
    assert (reader[:, inner:] == 0).all() == (model == "ours_unread")


def test_a_grown_run_records_its_switch_and_trains_its_tokens(tmp_path):
    records = quality.main(["--tiny", "--model", "ours", "--grow-at", "4", "--grow-batch", "2", "--grow-seq", "256",
                            "--eval-bytes", "3000", "--eval-max-doc", "1500", "--out", str(tmp_path / "q.jsonl")])
    grown = [r for r in records if r["kind"] == "grow"]
    assert [(r["step"], r["rows"], r["segment"]) for r in grown] == [(4, 2, 256)]
    result = records[-1]
    assert result["warmup_s"] >= grown[0]["grow_s"]  # the switch is untimed, like the first steps
    assert result["steps"] == 12 and result["tokens"] == 12 * 4 * 128 and math.isfinite(result["eval"]["bpb"])


@pytest.mark.parametrize("flags, message", [
    (["--grow-at", "5"], "--grow-at, --grow-batch and --grow-seq go together"),
    (["--grow-at", "5", "--grow-batch", "2", "--grow-seq", "128"], "must keep the tokens per step"),
    (["--grow-at", "1", "--grow-batch", "2", "--grow-seq", "256"], "must come after the --untimed-steps (2), got 1"),
    (["--model", "xl", "--grow-at", "5", "--grow-batch", "2", "--grow-seq", "256"], "the xl peer trains on one shape"),
    (["--batch", "8", "--seq", "16", "--grow-at", "5", "--grow-batch", "2", "--grow-seq", "64"],
     "must be longer than the model's segment (max_seq_len 64), got 64"),
    (["--batch", "5", "--grow-at", "5", "--grow-batch", "8", "--grow-seq", "80"],
     "max_seq_len (80) must be divisible by block_width (32)"),
])
def test_a_bad_segment_growth_is_refused(capsys, flags, message):
    with pytest.raises(SystemExit):
        quality.parse_args(["--tiny", *flags])
    assert message in capsys.readouterr().err


def test_a_compile_cache_saved_by_one_process_spares_the_next_its_compilation(tmp_path):
    """--compile-cache: a process with no cache file compiles and writes what it compiled there; the next,
    with an empty inductor cache of its own, loads the file and finds its graph there (a cache hit, no
    miss) instead of compiling it again."""
    import json
    import os
    import subprocess

    cache = tmp_path / "compiled.bin"
    script = (f"import json, sys, torch; sys.path.insert(0, {str(Path(quality.__file__).parent)!r}); import quality\n"
              f"loaded = quality.load_compile_cache({str(cache)!r})\n"
              f"torch.compile(lambda x: (x.sin() * 2).cos().sum())(torch.randn(64))\n"
              f"saved = not loaded and quality.save_compile_cache({str(cache)!r})\n"
              f"print(json.dumps(dict(loaded=loaded, saved=saved, **quality.compile_cache_counts())))\n")

    def run(inductor_dir: str) -> dict:
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(tmp_path / inductor_dir))
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    first = run("first")
    assert first == dict(loaded=False, saved=True, hit=0, miss=1) and cache.stat().st_size > 0
    assert [f.name for f in tmp_path.iterdir() if f.is_file()] == ["compiled.bin"]  # no temporary file left
    assert run("second") == dict(loaded=True, saved=False, hit=1, miss=0)


def _assert_same(a, b, where="checkpoint"):
    """a and b hold the same values, tensors bit for bit (same dtype, shape and every element)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} against {type(b).__name__}"
    if isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a)} against {sorted(b)}"
        for key in a:
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: {len(a)} items against {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), f"{where}: tensors differ"
    elif hasattr(a, "__dataclass_fields__"):  # Memories
        _assert_same(vars(a), vars(b), where)
    else:
        assert a == b, f"{where}: {a!r} against {b!r}"


def _whole_and_in_parts(tmp_path: Path, run: list[str]) -> tuple[list[dict], list[list[dict]]]:
    """The run of flags ``run`` (logging every 3 steps) trained to step 8 in one call and in two (stopped at
    step 4, so that one step's curve is unlogged there), both checkpointed there and then continued to the
    end: the two step-8 checkpoints (without the clock's figures, which are each call's own) and the two
    runs' records."""
    def call(name: str, *stop: str) -> list[dict]:
        return quality.main([*run, "--checkpoint", str(tmp_path / f"{name}.pt"), *stop,
                             "--out", str(tmp_path / f"{name}.jsonl")])

    whole = call("whole", "--stop-at-step", "8")
    parts = call("parts", "--stop-at-step", "4") + call("parts", "--stop-at-step", "8")
    assert [r["kind"] for r in parts] == ["config", "train", "checkpoint", "config", "resume", "train", "checkpoint"]
    assert [r["steps"] for r in parts if r["kind"] in ("checkpoint", "resume")] == [4, 4, 8]
    saved = [torch.load(tmp_path / f"{name}.pt", weights_only=True) for name in ("whole", "parts")]
    for checkpoint, calls in zip(saved, (1, 2)):
        progress = checkpoint["progress"]
        assert progress["step"] == 8 and progress["calls"] == calls
        checkpoint["progress"] = {k: v for k, v in progress.items()
                                  if k not in ("train_s", "warmup_s", "timed_steps", "calls")}
    return saved, [whole + call("whole"), parts + call("parts")]


def _same_curves_and_results(runs: list[list[dict]], bpb_tolerance: float) -> None:
    """Both runs logged the same train curve, ended at step 12 after their calls and scored alike."""
    curve = [[{k: v for k, v in r.items() if k not in ("train_s", "tokens_per_s")} for r in records
              if r["kind"] == "train"] for records in runs]
    assert len(curve[0]) == 4
    for a, b in zip(*curve):
        assert a.keys() == b.keys() and a["step"] == b["step"]
        assert all(a[k] == pytest.approx(b[k], abs=bpb_tolerance) for k in ("loss", "bpb", "grad_norm"))
    results = [records[-1] for records in runs]
    assert [(r["kind"], r["steps"], r["calls"], r["untimed_steps"]) for r in results] == [
        ("result", 12, 2, 4), ("result", 12, 3, 6)]
    for a, b in zip(*(r["eval"]["by_document"] for r in results)):
        assert a == pytest.approx(b, abs=bpb_tolerance)


@pytest.mark.parametrize("model, flags", [("ours", []), ("ours", ["--optimizer", "muon", "--muon-split-qkv"]),
                                          ("xl", ["--optimizer", "muon", "--mem", "64"])])
def test_a_run_resumed_from_its_checkpoint_trains_as_one_that_never_stopped(tmp_path, model, flags):
    """--checkpoint: a run stopped at step 4 and continued to step 8 holds there, bit for bit, all that a run
    trained to step 8 in one call holds (weights, optimiser moments, each row's place in its documents, the
    memories and states carried, the random streams of the memory and state dropout, the unlogged train curve);
    both log the same curve and, continued to the end, score the held-out documents the same. (The XL's memory
    of two segments makes which of its entries are each row's document carry over too.)"""
    saved, runs = _whole_and_in_parts(tmp_path, ["--tiny", "--model", model, "--tokens", str(4 * 128 * 12),
                                                 "--log-every", "3", "--eval-bytes", "1500", *flags])
    _assert_same(saved[0], saved[1])
    _same_curves_and_results(runs, bpb_tolerance=0)


@pytest.mark.gpu
@pytest.mark.parametrize("model", ["ours", "xl"])
def test_on_a_gpu_a_resumed_run_trains_as_one_that_never_stopped(tmp_path, model):
    """As on the CPU, on the GPU's training path (ours: CUDA graphs, which the resumed weights are loaded into;
    bf16 autocast; fused AdamW), up to its kernels' nondeterminism. Not compiled: compilation changes no weight
    a checkpoint holds, and each call would take minutes."""
    saved, runs = _whole_and_in_parts(tmp_path, ["--tiny", "--device", "cuda", "--no-compile", "--model", model,
                                                 "--tokens", str(4 * 128 * 12), "--log-every", "3",
                                                 "--eval-bytes", "1500"])
    for name, weight in saved[0]["model"].items():
        # an element-wise bound fails on any weight whose gradient is near zero, where a nondeterministic sum
        # can flip the sign of Adam's update; the weight as a whole must agree
        difference = (saved[1]["model"][name].float() - weight.float()).norm() / weight.float().norm().clamp(min=1e-12)
        assert difference < 1e-3, f"{name}: relative difference {difference:.2e}"
    _assert_same(saved[0]["streams"], saved[1]["streams"])
    _same_curves_and_results(runs, bpb_tolerance=2e-3)


def test_a_checkpoint_continues_only_with_the_flags_it_was_started_with(tmp_path):
    run = ["--tiny", "--model", "ours", "--tokens", "4096", "--eval-bytes", "1500", "--checkpoint",
           str(tmp_path / "run.pt"), "--out", str(tmp_path / "run.jsonl")]
    quality.main([*run, "--stop-at-step", "2"])
    with pytest.raises(SystemExit, match=r"holds a run of other flags \(lr: saved 0\.0006, given 0\.001\)"):
        quality.main([*run, "--lr", "1e-3"])


def test_a_checkpoint_continues_only_on_its_kind_of_device_and_past_its_step(tmp_path):
    """Each refusal names what differs, and comes before --out is opened: the records of the call that
    saved the run are still there."""
    run = ["--tiny", "--model", "ours", "--tokens", "4096", "--eval-bytes", "1500", "--checkpoint",
           str(tmp_path / "run.pt"), "--out", str(tmp_path / "run.jsonl")]
    quality.main([*run, "--stop-at-step", "3"])
    written = (tmp_path / "run.jsonl").read_text()
    for stop in ("3", "2"):
        with pytest.raises(SystemExit, match=r"holds the run at step 3 already; give a later step"):
            quality.main([*run, "--stop-at-step", stop])
    saved = torch.load(tmp_path / "run.pt", weights_only=True)
    assert saved["device"] == "cpu"
    saved["device"] = "cuda"  # as a GPU's call would have saved it
    torch.save(saved, tmp_path / "run.pt")
    with pytest.raises(SystemExit, match=r"holds a run trained on cuda, this call trains on cpu: continue it on cuda"):
        quality.main(run)
    saved["device"] = "cpu"
    saved["model_config"]["value_residual"] = True  # as if the preset had changed since the run was saved
    torch.save(saved, tmp_path / "run.pt")
    with pytest.raises(SystemExit, match=r"holds a run of another model \(value_residual: saved True, now False;"):
        quality.main(run)
    saved["model_config"] = None  # as checkpoints were saved before the twenty-seventh session
    torch.save(saved, tmp_path / "run.pt")
    with pytest.raises(SystemExit, match=r"was written before checkpoints held their model's config"):
        quality.main(run)
    del saved["device"]  # as the first version of --checkpoint saved it
    torch.save(saved, tmp_path / "run.pt")
    with pytest.raises(SystemExit, match=r"was written before checkpoints named their kind of device"):
        quality.main(run)
    assert (tmp_path / "run.jsonl").read_text() == written


def test_a_checkpoint_saved_before_a_model_field_existed_continues(tmp_path):
    """A model field added since the run was saved takes its default, which is the model the run trained:
    the run goes on from its step."""
    run = ["--tiny", "--model", "ours", "--tokens", "4096", "--eval-bytes", "1500", "--checkpoint",
           str(tmp_path / "run.pt"), "--out", str(tmp_path / "run.jsonl")]
    quality.main([*run, "--stop-at-step", "2"])
    saved = torch.load(tmp_path / "run.pt", weights_only=True)
    del saved["model_config"]["embedding_mixing"]  # as saved before the field existed
    torch.save(saved, tmp_path / "run.pt")
    quality.main([*run, "--stop-at-step", "3"])
    assert torch.load(tmp_path / "run.pt", weights_only=True)["progress"]["step"] == 3


def test_ours_carried_memories_and_states_round_trip_through_a_checkpoint(tmp_path):
    """What ours carries from step to step (the memories with a row's pre-reset entries masked, and the
    states) comes back from a checkpoint file as it was, masks and counts included."""
    from block_recurrent_transformer_pytorch.memory import Memories
    from training.checkpoints import load_checkpoint, save_checkpoint

    peer = quality.Ours(quality.parse_args(["--tiny"]), torch.device("cpu"))
    memories = Memories(xl=torch.randn(2, 2, 4, 1, 32, 16), blocks_since_reset=torch.tensor([0, 2, 1, 3]),
                        blocks_until_valid=2, xl_inputs=torch.randn(2, 4, 32, 64))
    peer.carry = (memories, [torch.randn(4, 8, 64)])
    save_checkpoint(dict(carried=peer.carried()), tmp_path / "carried.pt")
    restored = quality.Ours(quality.parse_args(["--tiny"]), torch.device("cpu"))
    restored.load_carried(load_checkpoint(tmp_path / "carried.pt")["carried"])
    _assert_same(restored.carry, peer.carry, "carry")


@pytest.mark.parametrize("flags, message", [
    (["--seconds", "5", "--checkpoint", "c.pt"], "--checkpoint continues a --tokens run"),
    (["--checkpoint", "c.pt", "--grow-at", "5", "--grow-batch", "2", "--grow-seq", "256"],
     "--checkpoint and --grow-at do not go together"),
    (["--checkpoint", "c.pt", "--set", "knn_layers=2,"], "--checkpoint does not keep a kNN layer's store"),
    (["--stop-at-step", "0"], "--stop-at-step must be a step >= 1, got 0"),
])
def test_bad_resume_flags_are_refused(capsys, flags, message):
    with pytest.raises(SystemExit):
        quality.parse_args(["--tiny", *flags])
    assert message in capsys.readouterr().err
