"""save_pretrained / from_pretrained (model.safetensors + config.json): the round trip, clear errors for a
damaged or mismatched file, and train.py's final/ weights with --init-from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import train
from block_recurrent_transformer_pytorch import BlockRecurrentTransformer, PretrainedError
from tests.helpers import small_model, tokens
from tests.test_train import flags, tiny

pytest.importorskip("safetensors")


@pytest.mark.parametrize("options", [{}, dict(logit_softcap=0.5, value_residual=True, unet_skips=True)],
                         ids=["seed", "capped-mixing"])
def test_round_trip_is_bit_exact(tmp_path, options):
    model = small_model(seed=3, **options).eval()
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = BlockRecurrentTransformer.from_pretrained(tmp_path / "m").eval()
    assert loaded.config == model.config
    assert json.loads((tmp_path / "m" / "config.json").read_text()) == {**model.config.to_dict(), "format_version": 1}
    x = tokens(2, 16)
    with torch.no_grad():
        (a, mems_a, states_a), (b, mems_b, states_b) = model(x), loaded(x)
    assert torch.equal(a, b) and all(torch.equal(s, t) for s, t in zip(states_a, states_b))


def test_shared_weights_are_written_once_and_tied_again(tmp_path):
    model = small_model()
    assert len({t.untyped_storage().data_ptr() for t in model.state_dict().values()}) == len(model.state_dict())
    model.to_logits.weight = model.token_emb.weight  # a tied model (not the default) still saves and loads
    model.save_pretrained(tmp_path / "tied")
    loaded = small_model(seed=9)
    loaded.to_logits.weight = loaded.token_emb.weight
    from block_recurrent_transformer_pytorch.pretrained import load_weights

    load_weights(loaded, tmp_path / "tied")
    assert torch.equal(loaded.token_emb.weight, model.token_emb.weight)
    assert loaded.to_logits.weight is loaded.token_emb.weight


def test_truncated_weights_and_wrong_config_name_the_file(tmp_path):
    small_model().save_pretrained(tmp_path / "m")
    weights, config = tmp_path / "m" / "model.safetensors", tmp_path / "m" / "config.json"
    saved = config.read_text()
    config.write_text(json.dumps({**json.loads(saved), "dim": "wide"}))
    with pytest.raises(PretrainedError, match=rf"{config}: not a valid model config .*dim"):
        BlockRecurrentTransformer.from_pretrained(tmp_path / "m")
    config.write_text(json.dumps({**json.loads(saved), "dim": 64}))  # valid, but not the weights' shapes
    with pytest.raises(PretrainedError, match=rf"{weights}: cannot load the weights"):
        BlockRecurrentTransformer.from_pretrained(tmp_path / "m")
    config.write_text(saved)
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(PretrainedError, match=rf"{weights}: cannot load the weights"):
        BlockRecurrentTransformer.from_pretrained(tmp_path / "m")
    config.write_text(json.dumps({**json.loads(saved), "format_version": 99}))
    with pytest.raises(PretrainedError, match=rf"{config}: format_version 99"):
        BlockRecurrentTransformer.from_pretrained(tmp_path / "m")


def test_train_writes_final_and_init_from_starts_from_it(tmp_path):
    cfg = tiny(tmp_path, max_steps=2)
    trained = train.train(cfg)
    final = Path(cfg.out_dir) / "final"
    saved = BlockRecurrentTransformer.from_pretrained(final)
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), trained.state_dict().values()))
    # a new run: the model flags come from final/config.json; it starts at step 0 from those weights
    model_flags = ("dim", "depth", "heads", "dim_head", "max_seq_len", "block_width", "num_state_vectors",
                   "recurrent_layers")
    argv = strip(flags(tiny(tmp_path, name="next", max_steps=1)), model_flags) + ["--init-from", str(final)]
    resolved = train.resolve_config(train.parse_args(argv))
    assert resolved.dim == cfg.dim and resolved.recurrent_layers == cfg.recurrent_layers
    start = train._load_model(resolved, torch.device("cpu"), None)
    assert all(torch.equal(a, b) for a, b in zip(start.state_dict().values(), saved.state_dict().values()))
    assert train.main(argv) == 0
    assert json.loads((tmp_path / "next" / "config.json").read_text())["train"]["init_from"] == str(final)
    first = [r for r in train.read_records(tmp_path / "next" / train.METRICS) if r["kind"] == "train"][0]
    assert first["step"] == 1
    # a model flag that differs from the saved config is refused, naming it
    with pytest.raises(train.TrainError, match=r"--dim 64 \(saved: 32\)"):
        train.resolve_config(train.parse_args(argv + ["--dim", "64", "--out-dir", str(tmp_path / "other")]))


def strip(argv: list[str], names: tuple[str, ...]) -> list[str]:
    """argv without the given flags and their values."""
    out, skip = [], False
    for arg in argv:
        if arg.startswith("--"):
            skip = arg[2:].replace("-", "_") in names
        if not skip:
            out.append(arg)
    return out
