"""bench/passkey.py: the sample layout, the scorer, truncated backprop windows, and a --tiny run end to end."""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import passkey  # noqa: E402

from block_recurrent_transformer_pytorch import BlockRecurrentTransformer  # noqa: E402

SEQ_LEN = 64


@pytest.mark.parametrize("filler_len", [0, 1, 37, 200, 1000])
def test_sample_layout(filler_len):
    rng = random.Random(filler_len)
    length = passkey.sample_length(filler_len + 50, SEQ_LEN)  # room for some front padding
    assert (length - 1) % SEQ_LEN == 0
    s = passkey.make_sample(filler_len, length, rng)
    t = s.tokens
    assert len(t) == length
    assert re.fullmatch(r"\d{5}", s.key)
    # the key where it says, inside the intro
    assert t[s.key_start:s.key_start + 5] == s.key.encode()
    intro = passkey.INTRO.format(key=s.key).encode()
    intro_start = s.key_start - passkey.INTRO.index("{key}")
    assert t[intro_start:intro_start + len(intro)] == intro
    # exactly filler_len bytes of filler between the intro and the question, none of them digits
    filler = t[intro_start + len(intro):s.question_start]
    assert len(filler) == filler_len
    assert filler in passkey.FILLER.encode() * (filler_len // len(passkey.FILLER) + 2)
    assert not re.search(rb"\d", filler)
    # the question, then the answer: the key's digits, the last 5 tokens
    question = passkey.QUESTION.encode()
    assert t[s.question_start:s.question_start + len(question)] == question
    assert s.answer_start == s.question_start + len(question) == length - 5
    assert t[s.answer_start:] == s.key.encode()
    # the front padding is filler too: the key is the only digits before the answer
    assert re.findall(rb"\d", t[:s.answer_start]) == list(re.findall(rb"\d", s.key.encode()))


def test_sample_too_short_and_batch():
    rng = random.Random(0)
    with pytest.raises(ValueError, match="needs at least"):
        passkey.make_sample(100, passkey.core_length(100) - 1, rng)
    length = passkey.sample_length(300, SEQ_LEN)
    batch = passkey.make_batch([0, 150, 300], length, rng)
    assert batch.shape == (3, length) and batch.dtype == torch.long
    assert bool((batch[:, -5:] >= ord("0")).all() and (batch[:, -5:] <= ord("9")).all())


def test_recall_scores_exact_digits():
    answers = torch.tensor([[ord(c) for c in "71432"], [ord(c) for c in "00000"]])
    logits = torch.nn.functional.one_hot(answers, 256).float()
    assert passkey.recall(logits, answers).tolist() == [1.0, 1.0]
    logits[0, 4] = torch.nn.functional.one_hot(torch.tensor(ord("3")), 256).float()  # one digit wrong
    assert passkey.recall(logits, answers).tolist() == [0.0, 1.0]


class Oracle:
    """A fake model that reads the key once and answers with it: its state is the text seen so far.

    With carry=False it ignores the states passed in, so it knows only the current segment."""

    max_seq_len = SEQ_LEN

    def __init__(self, carry: bool = True) -> None:
        self.carry = carry

    def __call__(self, x, xl_memories=None, states=None):
        logits = torch.zeros(*x.shape, 256)
        seen = states if self.carry and states is not None else [b""] * x.shape[0]
        for row in range(x.shape[0]):
            seen[row] = seen[row] + bytes(x[row].tolist())
            found = re.search(rb"pass key is (\d{5})", seen[row])
            if found is None:
                continue
            key, run = found.group(1), 0
            for p, token in enumerate(x[row].tolist()):
                run = run + 1 if chr(token).isdigit() else 0  # after j digits of a number, predict digit j
                if run < 5:
                    logits[row, p, key[run]] = 1.0
        return logits, None, seen


def test_evaluate_oracle_and_forgetful():
    device = torch.device("cpu")
    # D = 300: the key is several segments before the question
    right = passkey.evaluate(Oracle(), 300, trials=5, batch_size=2, seed=0, device=device)
    assert right["trials"] == 5 and right["recall"] == 1.0 and right["digit_acc"] == 1.0
    wrong = passkey.evaluate(Oracle(carry=False), 300, trials=5, batch_size=2, seed=0, device=device)
    assert wrong["trials"] == 5 and wrong["recall"] == 0.0


def test_segment_windows_end_aligned():
    assert passkey.segment_windows(7, 4) == [range(0, 3), range(3, 7)]
    assert passkey.segment_windows(3, 1) == [range(0, 1), range(1, 2), range(2, 3)]
    assert passkey.segment_windows(2, 4) == [range(0, 2)]


@pytest.mark.parametrize("bptt", [1, 2])
def test_answer_gradient_reaches_back_bptt_segments(bptt):
    """With the all-bytes loss off, the answer (last segment) reaches the initial state, used only
    by the first of 2 segments, exactly when the gradient window spans both."""
    cfg = passkey.Config(model=passkey.TINY_MODEL, bptt_segments=bptt, lm_loss_weight=0.0)
    torch.manual_seed(0)
    model = BlockRecurrentTransformer(**cfg.model)
    length = passkey.sample_length(40, model.max_seq_len)
    assert (length - 1) // model.max_seq_len == 2
    batch = passkey.make_batch([40, 40], length, random.Random(0))
    passkey.train_step(model, batch, cfg, torch.device("cpu"))
    grad = model.states[0].init_state.grad
    reached = grad is not None and bool(grad.abs().sum() > 0)
    assert reached == (bptt == 2)


def test_tiny_run_end_to_end(tmp_path):
    out = tmp_path / "passkey.jsonl"
    names = list(passkey.Config().variants)
    passkey.main(["--device", "cpu", "--tiny", "--variants", ",".join(names), "--out", str(out)])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0]["case"] == "env" and "passkey.py" in records[0]["command"]
    assert not [r for r in records if r["case"] == "error"]
    for name in names:
        train = [r for r in records if r["case"] == "train" and r["variant"] == name]
        assert len(train) == 1 and train[0]["steps"] == 3
        evals = [r for r in records if r["case"] == "eval" and r["variant"] == name]
        assert [r["filler"] for r in evals] == [64, 256]
        assert all(r["trials"] == 2 and 0.0 <= r["recall"] <= 1.0 for r in evals)
    assert [r["bptt_segments"] for r in records if r["case"] == "train"] == [2 if n == "state_kseg" else 1 for n in names]
    table = out.with_suffix(".md").read_text()
    assert all(f"| {name} |" in table for name in names)


def test_set_overrides_model_options_and_keeps_the_rest():
    """--set KEY=VALUE changes the model every variant starts from (over --tiny's), nothing else."""
    cfg = passkey.parse_args(["--tiny", "--set", "block_width=64", "--set", "max_seq_len=128",
                              "--set", "recurrent_layers=1,"])
    assert cfg.model == {**passkey.TINY_MODEL, "block_width": 64, "max_seq_len": 128, "recurrent_layers": (1,)}
    assert passkey.parse_args(["--tiny"]).model == passkey.TINY_MODEL


def _passkey_gpu(tmp_path, **env):
    import os
    import subprocess

    script = Path(__file__).resolve().parents[1] / "bench" / "passkey_gpu.sh"
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=300)


def test_passkey_gpu_spreads_the_variants_over_the_gpus_named(tmp_path):
    """VARIANTS over GPUS="2 3" in turn; each variant's run writes its own log (here passkey.py
    refuses the unknown names at once); bad numbers are refused before anything runs."""
    done = _passkey_gpu(tmp_path, GPUS="2 3", VARIANTS="nope_a nope_b nope_c")
    assert [line for line in done.stdout.splitlines() if line.startswith("variant ")] == [
        "variant nope_a on GPU 2", "variant nope_b on GPU 3", "variant nope_c on GPU 2"]
    for name in ("nope_a", "nope_b", "nope_c"):
        assert "unknown variants" in (tmp_path / f"passkey_{name}.log").read_text()
    refused = _passkey_gpu(tmp_path, TRIALS="fifty")
    assert refused.returncode == 2 and "TRIALS" in refused.stderr and "variant " not in refused.stdout


def test_passkey_gpu_gives_each_knn_variant_a_gpu_of_its_own(tmp_path):
    """Variants with a kNN layer take a GPU each, the others share the GPUs left; more kNN variants than
    that are refused up front, naming the split, unless SHARE=1 (round-robin). PYTHON=true: nothing trains."""
    def placed(**env):
        done = _passkey_gpu(tmp_path, PYTHON="true", **env)
        return done, [line for line in done.stdout.splitlines() if line.startswith("variant ")]

    _, lines = placed(GPUS="0 1 2", VARIANTS="xl_only knn state_1seg query_routed state_kseg")
    assert lines == ["variant xl_only on GPU 2", "variant knn on GPU 0", "variant state_1seg on GPU 2",
                     "variant query_routed on GPU 1", "variant state_kseg on GPU 2"]
    _, lines = placed(GPUS="4 5", VARIANTS="knn_top128 routed")
    assert lines == ["variant knn_top128 on GPU 4", "variant routed on GPU 5"]
    for variants in ("knn query_routed routed", "knn query_routed xl_only"):
        refused, lines = placed(GPUS="0 1", VARIANTS=variants)
        assert refused.returncode == 2 and lines == []
        assert "needs a GPU of its own" in refused.stderr and f"VARIANTS='{variants}'" in refused.stderr
    _, lines = placed(GPUS="0 1", VARIANTS="knn query_routed xl_only", SHARE="1")
    assert lines == ["variant knn on GPU 0", "variant query_routed on GPU 1", "variant xl_only on GPU 0"]

