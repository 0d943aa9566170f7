"""train.py --documents: rows read whole documents with their memories and states reset where each
starts; the final evaluation reads every document from its start; a stopped run resumes exactly."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import train
from training.evaluation import evaluate_documents

from .test_train import TINY, records, tiny


def _documents(sizes: list[int], seed: int = 0) -> torch.Tensor:
    """Random bytes 1..255 in documents of these sizes, each followed by the separator 0."""
    g = torch.Generator().manual_seed(seed)
    parts = [torch.cat((torch.randint(1, 256, (n,), generator=g, dtype=torch.uint8), torch.zeros(1, dtype=torch.uint8)))
             for n in sizes]
    return torch.cat(parts)


@pytest.mark.parametrize("keep_states", [True, False])
def test_document_evaluation_is_each_document_read_alone_from_its_start(keep_states):
    """evaluate_documents (3 rows side by side, documents of 1 to 5 segments) gives every document
    exactly the loss of the model reading it alone from fresh memories and states, the separator
    before it as its first input: nothing of the previous document leaks into the next."""
    torch.manual_seed(0)
    model = train.build_model(train.TrainConfig(**{**TINY, "use_compressed_mem": True, "data": "unused"})).eval()
    data = _documents([5, 140, 31, 70, 2, 33])
    result = evaluate_documents(model, data, separator=0, rows=3, keep_states=keep_states)

    separators = (data == 0).nonzero().flatten().tolist()
    total = 0.0
    for start, end in zip([0] + separators[:-1], separators):  # inputs data[start:end], targets one later
        memories = states = None
        for s in range(start, end, model.max_seq_len):
            stop = min(s + model.max_seq_len, end)
            with torch.no_grad():
                logits, memories, states = model(data[None, s:stop].long(), xl_memories=memories,
                                                 states=states if keep_states else None)
            total += F.cross_entropy(logits[0].double(), data[s + 1:stop + 1].long(), reduction="sum").item()
    assert result.count == len(data) - 1
    assert result.bpc == pytest.approx(total / (len(data) - 1) / math.log(2), rel=1e-5)
    assert sum(count for _, count in result.by_offset.values()) == len(data) - 1
    assert result.by_offset["0-1k"][1] == len(data) - 1


def test_a_documents_run_resumes_exactly_and_reports_by_offset(tmp_path, capsys):
    """--documents (through TrainStep's eager twin): a run stopped and resumed ends with the
    uninterrupted run's weights and log, the carried memories and states in its checkpoint; its final
    evaluation reads documents, by offset."""
    # documents of 500 to 3,000 bytes (ended by a NUL byte): rows reset every few segments, and the
    # evaluation has bytes at offsets past 1k
    g = torch.Generator().manual_seed(1)
    sentence = b"the quick brown fox jumps over the lazy dog. "
    docs = [sentence * int(torch.randint(11, 67, (), generator=g)) for _ in range(60)]
    (tmp_path / "corpus.txt").write_bytes(b"".join(doc + b"\0" for doc in docs))
    common = dict(max_steps=4, documents=True, doc_separator=0, xl_memories_dropout=0.3, state_dropout=0.3,
                  cuda_graph=True)
    train.train(tiny(tmp_path, "whole", **common))
    train.train(tiny(tmp_path, "parts", stop_at_step=2, **common))
    ckpt = train.load_checkpoint(tmp_path / "parts" / train.CHECKPOINT)
    (documents,) = ckpt["documents"]
    assert len(documents["carried"]) == TINY["grad_accum"] and documents["carried"][0][0] is not None
    assert train.main(["--resume", "--out-dir", str(tmp_path / "parts")]) == 0
    whole = train.load_checkpoint(tmp_path / "whole" / train.CHECKPOINT)
    parts = train.load_checkpoint(tmp_path / "parts" / train.CHECKPOINT)
    for name, weight in whole["model"].items():
        assert torch.equal(weight, parts["model"][name]), name

    def logged(run: str) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in records(tmp_path / run)]

    assert logged("parts") == logged("whole")
    final = {r["kind"]: r for r in records(tmp_path / "whole") if r["step"] == 4}
    test = train.load_splits(tiny(tmp_path, "any", **common))[1][2]
    offsets = train.document_offsets(test, 0)[1:]  # every predicted byte's offset in its document
    assert final["test_by_offset"]["0-1k"]["bytes"] == int((offsets < 1024).sum()) > 0
    assert final["test_by_offset"]["1k-4k"]["bytes"] == int((offsets >= 1024).sum()) > 0
    assert "the recurrent state is worth" in capsys.readouterr().out


def test_documents_needs_a_separator(tmp_path):
    with pytest.raises(train.TrainError, match="--documents needs the byte that ends each document"):
        tiny(tmp_path, documents=True)


def test_the_long_documents_preset_sets_its_flags_under_those_passed(tmp_path):
    cfg = train.resolve_config(train.parse_args(["--preset", "long-documents", "--doc-separator", "0",
                                                 "--batch-size", "4", "--out-dir", str(tmp_path)]))
    assert cfg.documents and cfg.embedding_init_std == 0.02 and cfg.learning_rate == 6e-4
    assert (cfg.optimizer, cfg.muon_lr) == ("muon", 3e-3)
    assert (cfg.schedule, cfg.decay_frac) == ("wsd", 0.4)
    assert (cfg.block_width, cfg.max_seq_len, cfg.seq_len) == (1024, 2048, 2048)
    assert cfg.batch_size == 4  # passed: it wins over the preset's 32
    model_config = train.build_model(cfg).config
    assert model_config.embedding_init_std == 0.02
    assert model_config.rotary_dim == 32 and model_config.memory_kv_from_inputs and model_config.kv_heads == 4
    assert model_config.value_residual and model_config.unet_skips and model_config.logit_softcap == 15.0
    unmixed = train.resolve_config(train.parse_args(["--preset", "long-documents", "--doc-separator", "0",
                                                     "--no-value-residual", "--no-unet-skips",
                                                     "--logit-softcap", "none", "--schedule", "cosine",
                                                     "--out-dir", str(tmp_path)]))
    # passed: they win over the preset's
    assert not (unmixed.value_residual or unmixed.unet_skips) and unmixed.logit_softcap is None
    assert unmixed.schedule == "cosine"
    assert train.build_model(unmixed).config.logit_softcap is None


def test_a_model_flag_of_the_preset_that_does_not_fit_is_named_with_the_preset(tmp_path):
    """--preset long-documents with --dim-head 16: the preset's rotary_dim=32 does not fit the head;
    the error names the flag and says that the preset set it, and passing it resolves it."""
    flags = ["--preset", "long-documents", "--doc-separator", "0", "--dim-head", "16", "--out-dir", str(tmp_path)]
    with pytest.raises(train.TrainError, match=r"rotary_dim.*got 32 \(--preset long-documents sets .*--rotary-dim 32"):
        train.build_model(train.resolve_config(train.parse_args(flags)))
    assert train.build_model(train.resolve_config(train.parse_args(flags + ["--rotary-dim", "8"]))).config.rotary_dim == 8


def test_heads_that_the_presets_key_value_heads_do_not_divide_are_named_with_the_preset(tmp_path):
    """--preset long-documents with --heads 6: the preset's 4 key/value heads do not divide 6; the error
    says so and that the preset set --kv-heads 4, and passing --kv-heads resolves it."""
    flags = ["--preset", "long-documents", "--doc-separator", "0", "--heads", "6", "--out-dir", str(tmp_path)]
    with pytest.raises(train.TrainError, match=r"heads \(6\) must be divisible by kv_heads \(4\).*--kv-heads 4"):
        train.build_model(train.resolve_config(train.parse_args(flags)))
    assert train.build_model(train.resolve_config(train.parse_args(flags + ["--kv-heads", "3"]))).config.kv_heads == 3


def test_a_preset_given_again_on_resume_leaves_the_saved_flags(tmp_path):
    """--resume --preset long-documents continues the run as it was started (--batch-size 4 stays 4,
    the saved separator stands), where the preset's flags would otherwise override the checkpoint's."""
    cfg = tiny(tmp_path, "run", max_steps=1, documents=True, doc_separator=46)
    train.train(cfg)
    resumed = train.resolve_config(train.parse_args(["--resume", "--preset", "long-documents", "--out-dir", cfg.out_dir,
                                                     "--max-steps", "2"]))
    assert (resumed.batch_size, resumed.seq_len, resumed.block_width) == (cfg.batch_size, cfg.seq_len, cfg.block_width)
    assert resumed.doc_separator == 46 and resumed.max_steps == 2  # passed again: that one wins


def test_runs_saved_before_a_model_field_existed_resume_and_start_new_runs(tmp_path, capsys):
    """A checkpoint and final/ config.json written before embedding_init_std, value_residual,
    unet_skips and logit_softcap existed (the fields removed here) still resume, evaluate and
    --init-from (with a preset, whose flags yield to the saved model's: the long-documents preset's
    value_residual, unet_skips and logit_softcap stay off); --documents on a run that read windows
    starts every row afresh, saying so."""
    import json

    cfg = tiny(tmp_path, "old", max_steps=2)
    train.train(cfg)
    ckpt_path = Path(cfg.out_dir) / train.CHECKPOINT
    ckpt = train.load_checkpoint(ckpt_path)
    added = ("embedding_init_std", "value_residual", "unet_skips", "logit_softcap")
    for field in added:
        del ckpt["model_config"][field]
        ckpt["train_config"].pop(field, None)
    train.save_checkpoint(ckpt, ckpt_path)
    config_json = Path(cfg.out_dir) / "final" / "config.json"
    saved = json.loads(config_json.read_text())
    for field in added:
        del saved[field]
    config_json.write_text(json.dumps(saved))

    assert train.main(["--eval-only", "--out-dir", cfg.out_dir]) == 0
    assert train.main(["--resume", "--out-dir", cfg.out_dir, "--max-steps", "3", "--documents",
                       "--doc-separator", "46"]) == 0
    assert "every row starts a new document" in capsys.readouterr().out
    resumed = train.load_checkpoint(ckpt_path)["model_config"]
    assert resumed["value_residual"] is False and resumed["unet_skips"] is False and resumed["logit_softcap"] is None
    new = str(tmp_path / "new")
    assert train.main(["--init-from", str(config_json.parent), "--preset", "long-documents", "--doc-separator", "46",
                       "--data", cfg.data, "--out-dir", new, "--max-steps", "1", "--device", "cpu",
                       "--eval-interval", "0", "--sample-interval", "0", "--seq-len", "64", "--batch-size", "2",
                       "--eval-streams", "2"]) == 0
    started = train.load_checkpoint(Path(new) / train.CHECKPOINT)["model_config"]
    assert started["embedding_init_std"] == 1.0
    assert started["value_residual"] is False and started["unet_skips"] is False and started["logit_softcap"] is None
