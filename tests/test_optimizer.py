"""train.py's optimizer (training/optimizer.py): Muon for the hidden matrices and AdamW for the rest, as one
optimizer that a scheduler, a checkpoint and a resumed run treat like AdamW alone."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

import train
from tests.test_train import records, tiny
from training.optimizer import mixing_weights, output_splits, param_groups


def model_and_optimizer(tmp_path: Path, **overrides):
    cfg = tiny(tmp_path, optimizer="muon", **overrides)
    torch.manual_seed(0)
    model = train.build_model(cfg)
    return cfg, model, train.build_optimizer(model, cfg, torch.device("cpu"))


def loss_of(model: nn.Module, seed: int) -> torch.Tensor:
    x = torch.randint(0, 256, (2, 33), generator=torch.Generator().manual_seed(seed))
    return train.RecurrentTrainerWrapper(model)(x)


def test_muon_trains_every_hidden_matrix_and_adamw_everything_else(tmp_path):
    cfg, model, optimizer = model_and_optimizer(tmp_path, muon_lr=2e-2)
    assert isinstance(optimizer, train.MuonAdamW)
    in_muon = [p for group in optimizer.muon.param_groups for p in group["params"]]
    in_adamw = [p for group in optimizer.adamw.param_groups for p in group["params"]]
    linear = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    assert {id(p) for p in in_muon} == linear - {id(model.to_logits.weight)}
    assert sorted(map(id, in_muon + in_adamw)) == sorted(id(p) for p in model.parameters())  # each exactly once
    assert id(model.token_emb.weight) in set(map(id, in_adamw)) and id(model.to_logits.weight) in set(map(id, in_adamw))
    assert [group["lr"] for group in optimizer.param_groups] == [cfg.learning_rate] * 2 + [2e-2]
    default = train.build_optimizer(model, tiny(tmp_path, optimizer="muon"), torch.device("cpu"))
    assert default.muon.param_groups[0]["lr"] == cfg.learning_rate  # --muon-lr defaults to --learning-rate
    assert isinstance(train.build_optimizer(model, tiny(tmp_path), torch.device("cpu")), torch.optim.AdamW)


def test_one_step_is_adamws_step_and_muons_step_on_their_parameters(tmp_path):
    """The combined optimizer moves each parameter as torch's AdamW or Muon alone would, with the
    scheduler's factor applied to both peak rates (whole matrices here, as torch's Muon holds them; the
    split's step is checked against torch's Muon on separate maps below)."""
    cfg, model, optimizer = model_and_optimizer(tmp_path, muon_lr=2e-2, muon_split_qkv=False)
    reference = copy.deepcopy(model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: train.lr_factor(s, cfg))
    matrices = {id(p) for p in train.hidden_matrices(reference)}
    decay = {id(m.weight) for m in reference.modules() if isinstance(m, (nn.Linear, nn.Embedding))}
    rest = [p for p in reference.parameters() if id(p) not in matrices]
    adamw = torch.optim.AdamW([{"params": [p for p in rest if id(p) in decay], "weight_decay": cfg.weight_decay},
                               {"params": [p for p in rest if id(p) not in decay], "weight_decay": 0.0}],
                              lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2))
    muon = torch.optim.Muon([p for p in reference.parameters() if id(p) in matrices], lr=2e-2, weight_decay=cfg.weight_decay,
                            adjust_lr_fn="match_rms_adamw")
    factor = train.lr_factor(0, cfg)
    for opt in (adamw, muon):
        for group in opt.param_groups:
            group["lr"] *= factor
    loss_of(model, 0).backward()
    loss_of(reference, 0).backward()
    optimizer.step()
    scheduler.step()
    adamw.step()
    muon.step()
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7, msg=name)
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx(
        [cfg.learning_rate * train.lr_factor(1, cfg)] * 2 + [2e-2 * train.lr_factor(1, cfg)])


def test_scalar_lr_trains_the_mixing_weights_at_their_own_rate(tmp_path):
    """--scalar-lr: the value residual's and U-net skips' weights form an AdamW group of their own, never
    decayed, whose first step (Adam's: each entry moves by its rate, whatever its gradient's size) moves them by
    --scalar-lr times the warmup's factor, while the other AdamW parameters move by --learning-rate's. Without
    the flag they stay in the undecayed group, so that checkpoints keep the groups they had."""
    mixing = dict(value_residual=True, unet_skips=True)
    cfg, model, optimizer = model_and_optimizer(tmp_path, scalar_lr=5e-2, **mixing)
    scalars = [model.skip_weights] + [attn.value_mix for attn, _ in model.layers[1:]]
    assert [id(p) for p in mixing_weights(model)] == [id(p) for p in scalars]
    adamw = optimizer.adamw.param_groups
    assert len(adamw) == 3 and [id(p) for p in adamw[2]["params"]] == [id(p) for p in scalars]
    assert (adamw[2]["lr"], adamw[2]["weight_decay"]) == (5e-2, 0.0)
    assert not {id(p) for p in scalars} & {id(p) for group in adamw[:2] for p in group["params"]}
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: train.lr_factor(s, cfg))
    before = copy.deepcopy(model)
    loss_of(model, 0).backward()
    optimizer.step()
    scheduler.step()
    factor = train.lr_factor(0, cfg)
    for scalar, old in zip(scalars, [before.skip_weights] + [attn.value_mix for attn, _ in before.layers[1:]]):
        torch.testing.assert_close((scalar - old).abs(), torch.full_like(scalar, 5e-2 * factor), rtol=1e-3, atol=0)
    norm, old_norm = model.norm_out.weight, before.norm_out.weight
    torch.testing.assert_close((norm - old_norm).abs(), torch.full_like(norm, cfg.learning_rate * factor),
                               rtol=1e-3, atol=0)
    assert adamw[2]["lr"] == pytest.approx(5e-2 * train.lr_factor(1, cfg))
    _, plain, default = model_and_optimizer(tmp_path, **mixing)
    assert len(default.adamw.param_groups) == 2
    assert {id(p) for p in mixing_weights(plain)} <= {id(p) for p in default.adamw.param_groups[1]["params"]}


def test_mixing_weights_are_every_options_mixes_and_nothing_else():
    """mixing_weights finds each option's learned mixes by name (embedding_mixing's too), in a compiled model as in
    the model itself, and in a model without the options none."""
    config = dict(num_tokens=64, dim=32, depth=4, dim_head=8, heads=4, max_seq_len=32, block_width=16,
                  num_state_vectors=8)
    model = train.BlockRecurrentTransformer(**config, value_residual=True, unet_skips=True, embedding_mixing=True)
    mixes = [model.skip_weights, model.embedding_mix] + [attn.value_mix for attn, _ in model.layers[1:]]
    assert {id(p) for p in mixing_weights(model)} == {id(p) for p in mixes}
    assert {id(p) for p in mixing_weights(torch.compile(model))} == {id(p) for p in mixes}
    assert mixing_weights(train.BlockRecurrentTransformer(**config)) == []


def test_scalar_lr_without_mixing_weights_or_not_positive_is_refused(tmp_path):
    with pytest.raises(train.TrainError, match=r"--scalar-lr 0.05 is the rate of the learned mixing weights of "
                                               r"--value-residual, --unet-skips, --embedding-mixing, and this run "
                                               r"has none of them"):
        train.resolve_config(train.parse_args(["--scalar-lr", "0.05", "--out-dir", str(tmp_path)]))
    for option in ("--value-residual", "--unet-skips", "--embedding-mixing"):  # any one of them takes it
        cfg = train.resolve_config(train.parse_args([option, "--scalar-lr", "0.05", "--out-dir", str(tmp_path)]))
        assert cfg.scalar_lr == 0.05
    cfg = train.resolve_config(train.parse_args(["--preset", "long-documents", "--doc-separator", "0",
                                                 "--scalar-lr", "0.05", "--out-dir", str(tmp_path)]))
    assert cfg.scalar_lr == 0.05 and cfg.value_residual  # the preset's mixing weights
    with pytest.raises(train.TrainError, match="--scalar-lr must be positive, got 0.0"):
        tiny(tmp_path, scalar_lr=0.0, value_residual=True)
    with pytest.raises(ValueError, match=r"scalar_lr=0.05 is the rate of the learned mixing weights .* this model "
                                          r"has none"):
        param_groups(train.build_model(tiny(tmp_path)), 0.1, muon=False, scalar_lr=0.05)


def test_a_scalar_lr_run_resumes_exactly_and_refuses_another_rate(tmp_path, capsys):
    common = dict(max_steps=4, optimizer="muon", muon_lr=2e-2, value_residual=True, unet_skips=True, scalar_lr=2e-2)
    train.train(tiny(tmp_path, "whole", **common))
    stopped = tiny(tmp_path, "parts", stop_at_step=2, **common)
    train.train(stopped)
    assert train.main(["--resume", "--scalar-lr", "0.01", "--out-dir", stopped.out_dir]) == 1
    assert "the checkpoint's run trained with --scalar-lr 0.02," in capsys.readouterr().err
    assert train.main(["--resume", "--out-dir", stopped.out_dir]) == 0
    whole = train.load_checkpoint(tmp_path / "whole" / train.CHECKPOINT)
    parts = train.load_checkpoint(tmp_path / "parts" / train.CHECKPOINT)
    for name, weight in whole["model"].items():
        assert torch.equal(weight, parts["model"][name]), name
    logged = [r for r in records(Path(stopped.out_dir)) if r.get("kind") == "train"]
    # the mixing weights' rate is logged beside AdamW's, on the same schedule
    assert logged and [r["lr_scalar"] for r in logged] == pytest.approx([r["lr"] * 2e-2 / stopped.learning_rate
                                                                          for r in logged])
    # a run that trained without the flag names its default when the flag is added on resume
    plain = tiny(tmp_path, "plain", stop_at_step=2, **{**common, "scalar_lr": None})
    train.train(plain)
    assert train.main(["--resume", "--scalar-lr", "0.01", "--out-dir", plain.out_dir]) == 1
    assert "the checkpoint's run trained with --scalar-lr none," in capsys.readouterr().err


def test_wsd_schedule_holds_the_peak_then_decays_linearly_to_min_lr(tmp_path):
    """--schedule wsd: the warmup, the peak held until the last --decay-frac of the steps after it, then a
    straight line down to --min-lr at --max-steps (and there after); constant holds the peak."""
    cfg = tiny(tmp_path, schedule="wsd", decay_frac=0.5, warmup_steps=10, max_steps=110, learning_rate=1e-3,
               min_lr=1e-4)
    assert train.lr_factor(0, cfg) == pytest.approx(0.1)
    for step in (10, 40, 60):  # at most half of the 100 steps after the warmup
        assert train.lr_factor(step, cfg) == pytest.approx(1.0)
    assert train.lr_factor(85, cfg) == pytest.approx(0.1 + 0.9 * 0.5)  # half way down the decay
    assert train.lr_factor(110, cfg) == pytest.approx(0.1)
    assert train.lr_factor(500, cfg) == pytest.approx(0.1)
    constant = replace(cfg, schedule="constant")
    assert [train.lr_factor(step, constant) for step in (10, 85, 110)] == [1.0] * 3
    cosine = replace(cfg, schedule="cosine")
    assert train.lr_factor(60, cosine) == pytest.approx(0.1 + 0.9 * 0.5)  # the default: half way at half the steps


@pytest.mark.parametrize("overrides, message", [
    (dict(schedule="linear"), "--schedule must be one of cosine, wsd, constant, got 'linear'"),
    (dict(schedule="wsd", decay_frac=0.0), r"--decay-frac must lie in \(0, 1\] \(a share of the steps after the "
                                           r"warmup\), got 0.0"),
    (dict(schedule="wsd", decay_frac=1.5), r"--decay-frac must lie in \(0, 1\] \(a share of the steps after the "
                                           r"warmup\), got 1.5"),
])
def test_a_bad_schedule_is_refused_by_name(tmp_path, overrides, message):
    with pytest.raises(train.TrainError, match=message):
        tiny(tmp_path, **overrides)


def test_its_state_dict_restores_both_optimizers_moments(tmp_path):
    _, model, optimizer = model_and_optimizer(tmp_path)
    for seed in range(2):
        loss_of(model, seed).backward()
        optimizer.step()
        optimizer.zero_grad()
    state = copy.deepcopy(optimizer.state_dict())
    assert len(state["param_groups"]) == 3 and len(state["state"]) == len(list(model.parameters()))
    twin = copy.deepcopy(model)
    restored = train.build_optimizer(twin, tiny(tmp_path, optimizer="muon"), torch.device("cpu"))
    restored.load_state_dict(state)
    for m, opt in ((model, optimizer), (twin, restored)):
        loss_of(m, 5).backward()
        opt.step()
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="the state holds 2 parameter groups, this optimizer 3"):
        restored.load_state_dict(torch.optim.AdamW(twin.parameters()).state_dict() | {"param_groups": state["param_groups"][:2]})


@pytest.mark.parametrize("flags, message", [
    (dict(optimizer="muon", fsdp=True), "--optimizer muon .* orthogonalises each whole weight matrix, which --fsdp"),
    (dict(optimizer="muon", muon_lr=0.0), "--muon-lr must be positive, got 0.0"),
    (dict(optimizer="Muon"), "--optimizer must be adamw or muon, got 'Muon'"),
])
def test_bad_optimizer_settings_are_refused(tmp_path, flags, message):
    with pytest.raises(train.TrainError, match=message):
        tiny(tmp_path, **flags)


def test_muon_lr_for_an_adamw_run_is_refused_but_a_presets_muon_lr_and_the_split_flag_are_not(tmp_path):
    with pytest.raises(train.TrainError, match="--muon-lr 0.01 is Muon's rate, and this run's --optimizer is adamw"):
        train.resolve_config(train.parse_args(["--muon-lr", "0.01", "--out-dir", str(tmp_path)]))
    cfg = train.resolve_config(train.parse_args(["--preset", "long-documents", "--doc-separator", "0",
                                                 "--optimizer", "adamw", "--out-dir", str(tmp_path)]))
    assert cfg.optimizer == "adamw"
    # muon_split_qkv is in every run's config (on by default): an AdamW run's flags, rebuilt from its config
    # with it either way, start the run again, and AdamW alone trains it
    for flag, split in (("--muon-split-qkv", True), ("--no-muon-split-qkv", False)):
        cfg = train.resolve_config(train.parse_args([flag, "--out-dir", str(tmp_path)]))
        assert (cfg.optimizer, cfg.muon_split_qkv) == ("adamw", split)
        model = train.build_model(cfg)
        assert type(train.build_optimizer(model, cfg, torch.device("cpu"))) is torch.optim.AdamW


@pytest.mark.parametrize("cuda_graph, split", [(False, False), (True, False), (False, True)])
def test_a_muon_run_resumes_exactly_and_refuses_another_optimizer(tmp_path, capsys, cuda_graph, split):
    common = dict(max_steps=4, optimizer="muon", muon_lr=2e-2, cuda_graph=cuda_graph, muon_split_qkv=split)
    train.train(tiny(tmp_path, "whole", **common))
    stopped = tiny(tmp_path, "parts", stop_at_step=2, **common)
    train.train(stopped)
    own_split, other_split = ("--muon-split-qkv", "--no-muon-split-qkv")[::1 if split else -1]
    for flags, trained in ((["--optimizer", "adamw"], "--optimizer muon,"), (["--muon-lr", "0.01"], "--muon-lr 0.02,"),
                           (["--learning-rate", "0.001"], "--learning-rate "), ([other_split], own_split + ","),
                           (["--schedule", "wsd"], "--schedule cosine,")):
        assert train.main(["--resume", *flags, "--out-dir", stopped.out_dir]) == 1
        assert f"the checkpoint's run trained with {trained}" in capsys.readouterr().err, flags
    assert train.main(["--resume", "--out-dir", stopped.out_dir]) == 0
    whole = train.load_checkpoint(tmp_path / "whole" / train.CHECKPOINT)
    parts = train.load_checkpoint(tmp_path / "parts" / train.CHECKPOINT)
    for name, weight in whole["model"].items():
        assert torch.equal(weight, parts["model"][name]), name
    momentum = [s for s in parts["optimizer"]["state"].values() if "momentum_buffer" in s]
    assert momentum and len(momentum) == len(train.hidden_matrices(train.build_model(stopped)))


def test_a_wsd_run_refuses_another_decay_share_on_resume(tmp_path, capsys):
    """wsd's decay share sets where its rate falls: a resumed run keeps the one it started with."""
    stopped = tiny(tmp_path, max_steps=4, stop_at_step=2, schedule="wsd", decay_frac=0.5)
    train.train(stopped)
    assert train.main(["--resume", "--decay-frac", "0.25", "--out-dir", stopped.out_dir]) == 1
    assert "the checkpoint's run trained with --decay-frac 0.5," in capsys.readouterr().err
    assert train.main(["--resume", "--out-dir", stopped.out_dir]) == 0
    assert train.load_checkpoint(Path(stopped.out_dir) / train.CHECKPOINT)["step"] == 4


def test_muon_on_a_torch_without_it_is_refused(tmp_path, monkeypatch):
    monkeypatch.delattr(torch.optim, "Muon")
    with pytest.raises(train.TrainError, match=r"--optimizer muon needs torch.optim.Muon \(torch 2.9 or later\)"):
        tiny(tmp_path, optimizer="muon")


def test_a_checkpoint_from_before_the_optimizer_flag_resumes_with_adamw(tmp_path):
    """Checkpoints written before --optimizer and --schedule existed hold no optimizer, muon_lr or schedule in
    their config: they trained with AdamW on the cosine, and resume so."""
    run = tiny(tmp_path, max_steps=4, stop_at_step=2)
    train.train(run)
    path = Path(run.out_dir) / train.CHECKPOINT
    ckpt = train.load_checkpoint(path)
    for name in ("optimizer", "muon_lr", "schedule", "decay_frac", "scalar_lr"):
        del ckpt["train_config"][name]
    torch.save(ckpt, path)
    cfg = train.resolve_config(train.parse_args(["--resume", "--out-dir", run.out_dir]))
    assert (cfg.optimizer, cfg.muon_lr, cfg.schedule, cfg.scalar_lr) == ("adamw", None, "cosine", None)
    train.train(cfg)
    assert train.load_checkpoint(path)["step"] == 4


def test_a_muon_checkpoint_from_before_the_split_flag_resumes_with_whole_matrices(tmp_path):
    """Checkpoints written before --muon-split-qkv existed (its default now on) hold no muon_split_qkv: their
    Muon orthogonalised each fused matrix whole, and resumes so, with the state it saved."""
    run = tiny(tmp_path, max_steps=4, stop_at_step=2, optimizer="muon", muon_split_qkv=False)
    train.train(run)
    path = Path(run.out_dir) / train.CHECKPOINT
    ckpt = train.load_checkpoint(path)
    del ckpt["train_config"]["muon_split_qkv"]
    torch.save(ckpt, path)
    assert train.resolve_config(train.parse_args(["--resume", "--out-dir", run.out_dir])).muon_split_qkv is False
    assert train.main(["--resume", "--out-dir", run.out_dir]) == 0
    resumed = train.load_checkpoint(path)
    assert resumed["step"] == 4 and resumed["train_config"]["muon_split_qkv"] is False
    assert all("output_splits" not in group for group in resumed["optimizer"]["param_groups"])


def test_a_copy_keeps_both_optimizers_and_a_new_group_is_refused(tmp_path):
    _, model, optimizer = model_and_optimizer(tmp_path)
    copied = copy.deepcopy(optimizer)
    assert len(copied.param_groups) == 3 and copied.param_groups[2] is copied.muon.param_groups[0]
    loss_of(model, 0).backward()
    copy.deepcopy(optimizer).step()  # a copy steps its own copies of the parameters
    with pytest.raises(NotImplementedError, match="add the group to its .adamw or .muon"):
        optimizer.add_param_group({"params": [nn.Parameter(torch.zeros(2, 2))]})


def test_muon_leaves_the_output_head_to_adamw_whatever_it_is_made_of():
    model = nn.Module()
    model.hidden = nn.Linear(4, 4)
    model.to_logits = nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 8))
    assert [id(p) for p in train.hidden_matrices(model)] == [id(model.hidden.weight)]
    model.other = nn.Module()
    model.other.to_logits = nn.Linear(4, 8)
    with pytest.raises(ValueError, match="expected one output head named to_logits"):
        train.hidden_matrices(model)


@pytest.mark.parametrize("settings", [dict(nesterov=True, adjust_lr_fn="match_rms_adamw", weight_decay=0.1),
                                      dict(nesterov=False, adjust_lr_fn=None, weight_decay=0.0, ns_steps=3)],
                         ids=["preset", "plain"])
def test_batched_muon_moves_every_matrix_as_torchs_muon(settings):
    """BatchedMuon (the Newton-Schulz iterations batched over matrices of one shape) against torch.optim.Muon,
    the reference, over three steps: tall, wide and square matrices, two of one shape, a matrix without a
    gradient in a step (one of a shape shared, then one alone). On these small CPU shapes the products
    round alike: the weights agree to 1e-7."""
    torch.manual_seed(0)
    shapes = [(64, 32), (64, 32), (32, 96), (32, 32), (96, 32)]
    reference = [nn.Parameter(torch.randn(*shape)) for shape in shapes]
    batched = [nn.Parameter(p.detach().clone()) for p in reference]
    optimizers = torch.optim.Muon(reference, lr=3e-3, **settings), train.BatchedMuon(batched, lr=3e-3, **settings)
    for step in range(3):
        for i, (p, q) in enumerate(zip(reference, batched)):
            grad = None if (step, i) in ((1, 1), (2, 2)) else torch.randn(p.shape)
            p.grad, q.grad = grad, None if grad is None else grad.clone()
        for opt in optimizers:
            opt.step()
        for i, (p, q) in enumerate(zip(reference, batched)):
            torch.testing.assert_close(q, p, rtol=0, atol=1e-7, msg=f"step {step}, matrix {i}")
    assert all(torch.equal(optimizers[0].state[p]["momentum_buffer"], optimizers[1].state[q]["momentum_buffer"])
               for p, q in zip(reference, batched))


@pytest.mark.parametrize("settings", [dict(nesterov=True, adjust_lr_fn="match_rms_adamw", weight_decay=0.1),
                                      dict(nesterov=False, adjust_lr_fn=None, weight_decay=0.0)],
                         ids=["preset", "plain"])
def test_split_muon_moves_each_fused_map_as_torchs_muon_moves_separate_layers(settings):
    """With output_splits, BatchedMuon moves each block of a fused matrix's rows (queries, keys, values) as
    torch.optim.Muon moves the same maps held as separate matrices, over three steps (a matrix without a
    gradient in one), and a matrix split into one part as a whole one."""
    torch.manual_seed(0)
    fused = [nn.Parameter(torch.randn(64 + 32 + 32, 48)), nn.Parameter(torch.randn(40 + 40, 48)),
             nn.Parameter(torch.randn(32, 48))]
    splits = [(64, 32, 32), (40, 40), (32,)]
    separate = [nn.Parameter(part.detach().clone()) for p, rows in zip(fused, splits) for part in p.split(rows)]
    reference = torch.optim.Muon(separate, lr=3e-3, **settings)
    batched = train.BatchedMuon([{"params": fused, "output_splits": splits}], lr=3e-3, **settings)
    for step in range(3):
        grads = [None if (step, i) == (1, 1) else torch.randn(p.shape) for i, p in enumerate(fused)]
        part_grads = [part for grad, rows in zip(grads, splits)
                      for part in ([None] * len(rows) if grad is None else grad.split(rows))]
        for p, grad in zip(fused, grads):
            p.grad = grad
        for q, grad in zip(separate, part_grads):
            q.grad = None if grad is None else grad.clone()
        reference.step()
        batched.step()
        torch.testing.assert_close(torch.cat([q.detach() for q in separate]),
                                   torch.cat([p.detach() for p in fused]), rtol=0, atol=1e-7, msg=f"step {step}")


def test_output_splits_name_the_presets_fused_projections(tmp_path):
    """The long-documents model's fused projections declare their maps: each layer's to_qkv its queries,
    keys and values (8 and 4 heads of 64), the state's to_write_q its two queries and to_kv its keys and
    values; Muon gets them by default, and with --no-muon-split-qkv sees whole matrices."""
    cfg = train.TrainConfig(**{**train.PRESETS["long-documents"], "doc_separator": 0, "out_dir": str(tmp_path)})
    model = train.build_model(cfg)
    matrices = train.hidden_matrices(model)
    names = {id(p): name for name, p in model.named_parameters()}
    splits = {names[id(p)]: rows for p, rows in zip(matrices, output_splits(model, matrices))}
    assert all(splits[f"layers.{i}.0.to_qkv.weight"] == (512, 256, 256) for i in range(6))
    assert splits["states.0.to_write_q.weight"] == (512, 512) and splits["states.0.to_kv.weight"] == (256, 256)
    whole = {name: rows for name, rows in splits.items() if len(rows) == 1}
    assert len(whole) == len(matrices) - 8 and all("proj_in" not in name or rows == (2730,)
                                                     for name, rows in whole.items())
    split_muon = train.build_optimizer(model, cfg, torch.device("cpu")).muon
    assert split_muon.param_groups[0]["output_splits"] == output_splits(model, matrices)
    whole_muon = train.build_optimizer(model, replace(cfg, muon_split_qkv=False), torch.device("cpu")).muon
    assert "output_splits" not in whole_muon.param_groups[0]


@pytest.mark.parametrize("splits, message", [
    ([(32, 32)], r"output_splits \(32, 32\) do not divide the 96 rows of a \(96, 16\) matrix"),
    ([(96, 0)], r"output_splits \(96, 0\) do not divide the 96 rows"),
    ([(96,), (96,)], "output_splits has 2 entries for 1 parameters"),
])
def test_output_splits_that_do_not_fit_the_matrix_are_refused(splits, message):
    with pytest.raises(ValueError, match=message):
        train.BatchedMuon([{"params": [nn.Parameter(torch.randn(96, 16))], "output_splits": splits}], lr=1e-3)


def test_a_state_saved_with_other_splits_is_refused_both_ways():
    """Loading a state replaces torch's param groups with the saved ones: with other output_splits (or none)
    Muon would silently orthogonalise other matrices, so the state is refused instead."""
    weight = nn.Parameter(torch.randn(96, 16))
    split = train.BatchedMuon([{"params": [weight], "output_splits": [(64, 32)]}], lr=1e-3)
    whole = train.BatchedMuon([weight], lr=1e-3)
    weight.grad = torch.randn(96, 16)
    for trained, other in ((split, whole), (whole, split)):
        trained.step()
        state = copy.deepcopy(trained.state_dict())
        with pytest.raises(ValueError, match="param group 0 was saved with output_splits"):
            other.load_state_dict(state)
        trained.load_state_dict(state)  # its own state loads
    assert split.param_groups[0]["output_splits"] == [(64, 32)] and "output_splits" not in whole.param_groups[0]


def test_batched_muon_on_the_presets_matrices_agrees_with_torchs_to_bf16_rounding(tmp_path):
    """On the long-documents model's own matrices (up to 2730 x 512) batched bf16 products round
    differently from torch's one-at-a-time ones: each matrix's update agrees to 1% of its norm."""
    cfg = train.TrainConfig(**{**train.PRESETS["long-documents"], "doc_separator": 0, "out_dir": str(tmp_path)})
    torch.manual_seed(0)
    matrices = train.hidden_matrices(train.build_model(cfg))
    twins = [nn.Parameter(p.detach().clone()) for p in matrices]
    before = [p.detach().clone() for p in matrices]
    for p, q in zip(matrices, twins):
        p.grad = torch.randn_like(p)
        q.grad = p.grad.clone()
    torch.optim.Muon(matrices, lr=3e-3, adjust_lr_fn="match_rms_adamw").step()
    train.BatchedMuon(twins, lr=3e-3, adjust_lr_fn="match_rms_adamw").step()
    for i, (p, q, x) in enumerate(zip(matrices, twins, before)):
        reference, batched = p.detach() - x, q.detach() - x
        assert (batched - reference).norm() <= 1e-2 * reference.norm(), (i, tuple(p.shape))


def test_a_closure_is_evaluated_once_with_gradients_and_its_loss_returned(tmp_path):
    _, model, optimizer = model_and_optimizer(tmp_path)
    calls = []

    def closure():
        optimizer.zero_grad()
        loss = loss_of(model, 0)
        loss.backward()
        calls.append(loss.detach())
        return loss

    before = model.to_logits.weight.detach().clone()
    for opt in (optimizer, optimizer.muon):  # MuonAdamW, and BatchedMuon alone
        assert torch.equal(opt.step(closure).detach(), calls[-1])
    assert len(calls) == 2 and not torch.equal(model.to_logits.weight, before)
