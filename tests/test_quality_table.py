"""bench/quality_table.py: quality.py's results per run and per configuration over its seeds; the benches' --set values."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import common  # noqa: E402
import quality_table  # noqa: E402


def _run(impl: str, model: str, seed: int, bpb: float, flags: dict, cut: bool = False, result: bool = True,
         curve: tuple[tuple[int, float], ...] = ()) -> list[dict]:
    args = dict(impl=impl, out=f"/tmp/{impl}.jsonl", seed=seed, stop_after=500.0, model=model, **flags)
    records = [dict(model=model, impl=impl, kind="config", args=args), dict(model=model, impl=impl, kind="train")]
    records += [dict(model=model, impl=impl, kind="train", step=step, bpb=loss) for step, loss in curve]
    if result:
        by_offset = {b: dict(bpb=bpb + i / 100, bytes=10) for i, b in enumerate(quality_table.BUCKETS)}
        records.append(dict(model=model, impl=impl, kind="result", params=18_550_000, tokens=100_000_000,
                            tokens_per_s=500_000, cut=cut, eval=dict(bpb=bpb, by_offset=by_offset),
                            nostate_eval=dict(bpb=bpb + 0.001) if model == "ours" else None))
    return records


def test_runs_of_one_configuration_are_averaged_over_their_seeds(tmp_path, capsys):
    records = (_run("quality_0_ours", "ours", 0, 0.90, dict(tokens=1e8)) + _run("quality_1_xl", "xl", 0, 0.95, dict(tokens=1e8, seg=512))
               + _run("quality_2_ours", "ours", 1, 0.86, dict(tokens=1e8)) + _run("quality_3_xl", "xl", 1, 0.93, dict(tokens=1e8, seg=512))
               + _run("quality_4_xl", "xl", 0, 0.99, dict(tokens=1e8, seg=1024))      # another configuration
               + _run("quality_5_ours", "ours", 2, 1.20, dict(tokens=1e8), cut=True)  # cut: counted apart
               + _run("quality_6_ours", "ours", 3, 0.0, dict(tokens=1e8), result=False))
    path = tmp_path / "quality_all.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    summaries = {(s["model"], s["configuration"].get("seg"), s["cut"]): s for s in quality_table.main([str(tmp_path)])}
    ours = summaries[("ours", None, False)]
    assert ours["seeds"] == [0, 1] and abs(ours["bpb"] - 0.88) < 1e-9 and (ours["low"], ours["high"]) == (0.86, 0.90)
    assert abs(ours["by_offset"]["64k+"] - 0.92) < 1e-9 and abs(ours["nostate"] - 0.881) < 1e-9
    xl = summaries[("xl", 512, False)]
    assert xl["seeds"] == [0, 1] and abs(xl["bpb"] - 0.94) < 1e-9 and xl["nostate"] is None
    assert summaries[("xl", 1024, False)]["seeds"] == [0] and summaries[("ours", None, True)]["seeds"] == [2]
    assert len(summaries) == 4  # the run without a result is in no configuration
    out = capsys.readouterr().out
    assert "quality_6_ours" in out and "(no result)" in out and "per configuration, over its seeds" in out
    assert "quality_5_ours (cut)" in out and "seg=512" in out and "seg=1024" in out


def test_set_arguments_are_read_as_the_values_they_spell():
    """--set KEY=VALUE of quality.py and profile_step.py: tuples, booleans, None, numbers, else text."""
    assert common.parse_settings(["recurrent_layers=2,5", "knn_layers=4,", "use_flash_attn=false", "rotary_dim=none",
                                  "block_width=1024", "xpos_scale_base=1e9", "gate_type=lstm", "read_recurrent_layers=()",
                                  "block_width=512"]) == dict(
        recurrent_layers=(2, 5), knn_layers=(4,), use_flash_attn=False, rotary_dim=None, block_width=512,
        xpos_scale_base=1e9, gate_type="lstm", read_recurrent_layers=())  # the last of a key given twice stands


def test_configurations_of_one_seed_each_are_told_apart_by_their_flags(tmp_path, capsys):
    """Two calls' runs share their names (quality_0_ours, ...): with one seed per configuration the
    table still prints a line per configuration, naming the flags that differ."""
    for shape, seq in (("a", 4096), ("b", 8192)):
        records = (_run("quality_0_ours", "ours", 0, 1.0, dict(tokens=1e8, seq=seq))
                   + _run("quality_1_ours_nostate", "ours_nostate", 0, 0.95, dict(tokens=1e8, seq=seq)))
        (tmp_path / f"{shape}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert len(quality_table.main([str(tmp_path)])) == 4
    out = capsys.readouterr().out
    assert "per configuration" in out and "seq=4096" in out and "seq=8192" in out



def test_a_preset_whose_model_changed_is_two_configurations(tmp_path, capsys):
    """The same flags (--preset long-documents) before and after the preset gained value_residual: two
    configurations; a record written before a field existed groups with one that has it at its default,
    whatever --set said so."""
    def with_model(records: list[dict], config: dict) -> list[dict]:
        return [dict(r, config=config) if r["kind"] == "config" else r for r in records]

    flags = dict(tokens=1e8, preset="long-documents")
    model = dict(num_tokens=256, dim=512, depth=6, kv_heads=4)
    records = (with_model(_run("quality_0_ours", "ours", 0, 0.80, flags), model)
               + with_model(_run("quality_1_ours", "ours", 1, 0.82, dict(flags, set=["value_residual=false"])),
                            dict(model, value_residual=False))
               + with_model(_run("quality_2_ours", "ours", 0, 0.78, flags), dict(model, value_residual=True)))
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summaries = quality_table.main([str(tmp_path)])
    by_seeds = {tuple(s["seeds"]): s for s in summaries}
    assert set(by_seeds) == {(0, 1), (0,)} and abs(by_seeds[(0, 1)]["bpb"] - 0.81) < 1e-9
    assert by_seeds[(0,)]["configuration"]["model.value_residual"] is True
    assert "model.value_residual=True" in capsys.readouterr().out


def test_a_number_recorded_as_an_int_or_as_the_float_it_equals_is_one_configuration(tmp_path):
    """--set logit_softcap=15 records the int 15, the preset's logit_softcap=15.0 the float: one model, one
    configuration; another cap is another."""
    def with_model(records: list[dict], config: dict) -> list[dict]:
        return [dict(r, config=config) if r["kind"] == "config" else r for r in records]

    flags = dict(tokens=1e8, preset="long-documents")
    records = (with_model(_run("quality_0_ours", "ours", 0, 0.78, flags), dict(logit_softcap=15))
               + with_model(_run("quality_1_ours", "ours", 1, 0.80, flags), dict(logit_softcap=15.0))
               + with_model(_run("quality_2_ours", "ours", 2, 0.79, flags), dict(logit_softcap=30.0)))
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    by_seeds = {tuple(s["seeds"]): s for s in quality_table.main([str(tmp_path)])}
    assert set(by_seeds) == {(0, 1), (2,)} and abs(by_seeds[(0, 1)]["bpb"] - 0.79) < 1e-9


def test_each_run_says_when_its_training_loss_left_the_early_plateau(tmp_path, capsys):
    """The first logged step under PLATEAU_BPB (1.2 bits/byte): later is worse (RESULTS.md, fifteenth session)."""
    late = ((200, 4.4), (400, 2.6), (600, 2.0), (800, 2.03), (1000, 1.2), (1200, 0.96), (1400, 1.3))
    records = (_run("quality_0_ours", "ours", 2, 0.96, dict(tokens=1e8), curve=late)
               + _run("quality_1_ours", "ours", 0, 0.85, dict(tokens=1e8), curve=((200, 4.3), (400, 2.5), (600, 1.1)))
               + _run("quality_2_ours", "ours", 1, 1.9, dict(tokens=1e6), curve=((200, 4.3), (400, 2.5))))
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert quality_table.left_plateau_at(list(late)) == 1200  # 1.2 itself is not under it
    quality_table.main([str(tmp_path)])
    lines = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("quality_")}
    assert [lines[f"quality_{i}_ours"][-1] for i in range(3)] == ["1200", "600", "-"]


def test_each_run_says_how_long_its_clock_ran_before_it_reached_its_pace(tmp_path, capsys):
    """A --seconds run's untimed steps must hold its compilation: the first logged stretch of timed
    steps against the pace of the next shows what the clock counted of it (RESULTS.md, twenty-fourth
    session: 9-32 s of the XL's 180 s)."""
    assert abs(quality_table.slow_start_s([(200, 28.0), (400, 33.6)], untimed_steps=2) - (28.0 - 198 * 0.028)) < 1e-9
    assert abs(quality_table.slow_start_s([(200, 10.5), (400, 21.3), (600, 40.0)], untimed_steps=6)
               - (10.5 - 194 * 0.054)) < 1e-9
    assert quality_table.slow_start_s([(200, 28.0)], untimed_steps=2) is None  # no pace to compare with
    assert quality_table.slow_start_s([(2, 0.0), (4, 0.1)], untimed_steps=2) is None  # one stretch of timed steps
    # a log at the untimed steps is not a stretch of timed steps; two runs' logs of one step give no pace
    assert abs(quality_table.slow_start_s([(2, 0.0), (200, 28.0), (400, 33.6)], untimed_steps=2)
               - (28.0 - 198 * 0.028)) < 1e-9
    assert quality_table.slow_start_s([(200, 28.0), (200, 27.0)], untimed_steps=2) is None
    records = _run("quality_0_xl", "xl", 0, 0.87, dict(seconds=180.0))
    records[-1]["untimed_steps"] = 2
    records[2:2] = [dict(model="xl", impl="quality_0_xl", kind="train", step=step, bpb=1.0, train_s=seconds)
                    for step, seconds in ((200, 28.0), (400, 33.6))]
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    quality_table.main([str(tmp_path)])
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("quality_0_xl"))
    assert line.split()[5] == "22.5"


def test_the_calls_of_a_checkpointed_run_are_one_run_whatever_the_files_order(tmp_path, capsys):
    """quality.py --checkpoint writes each call's records to its own file: the table joins a run's calls by the
    steps where one saved it and the next resumed, its curve and clock (and where it left the plateau) from
    the first call on and its result from the last. A run of another seed under the same checkpoint file
    stays apart; a call killed before it saved, and a second call resumed from a step another call already
    continued, are left out with a warning."""
    import quality

    run = ["--tiny", "--model", "ours", "--impl", "quality_0_ours", "--log-every", "2", "--eval-bytes", "1500",
           "--checkpoint", str(tmp_path / "run.pt")]
    quality.main([*run, "--stop-at-step", "4", "--out", str(tmp_path / "a1.jsonl")])
    quality.main([*run, "--stop-at-step", "8", "--out", str(tmp_path / "a2.jsonl")])
    quality.main([*run, "--out", str(tmp_path / "a3.jsonl")])
    first, middle, last = ([json.loads(line) for line in (tmp_path / f"a{i}.jsonl").read_text().splitlines()]
                           for i in (1, 2, 3))
    assert [r["kind"] for r in middle][:3] == ["config", "resume", "train"]

    def write(name: str, records: list[dict]) -> str:
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in records))
        return str(tmp_path / name)

    other_seed = [dict(r, args=dict(r["args"], seed=1)) if r["kind"] == "config" else r for r in first]
    files = [str(tmp_path / "a3.jsonl"), write("killed.jsonl", middle[:3]), str(tmp_path / "a1.jsonl"),
             write("seed1.jsonl", other_seed), str(tmp_path / "a2.jsonl"), write("repeat.jsonl", last)]
    runs = quality_table.load_runs(files)
    warnings = capsys.readouterr().err
    assert "killed.jsonl: quality_0_ours resumed at step 4 but neither saved nor ended its run" in warnings
    assert "repeat.jsonl: quality_0_ours resumed at step 8 a run none of the files given saved there" in warnings
    assert [(r["seed"], Path(r["file"]).name, r["result"] is not None) for r in runs] == [
        (0, "a3.jsonl", True), (1, "seed1.jsonl", False)]
    whole = runs[0]
    assert [step for step, _ in whole["curve"]] == [2, 4, 6, 8, 10, 12]
    # each call's clock starts after its own 2 untimed steps (at steps 2, 6 and 10): the logs there are untimed
    assert [step for step, _ in whole["clock"]] == [4, 8, 12]
    assert whole["result"]["calls"] == 3 and whole["clock_untimed_steps"] == 2
    quality_table.main(files)
    lines = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("quality_")]
    assert [(line[1], line[-1]) for line in lines] == [("0", "-"), ("1", "result)")]  # 12 steps: on the plateau


def test_what_is_not_configuration_is_quality_pys_per_call_flags_and_the_seed():
    import quality

    assert set(quality_table.NOT_CONFIGURATION) == quality.PER_CALL_FLAGS | {"seed"}
