"""The results of bench/quality.py runs as tables: one line per run, then one per configuration over
its seeds (mean, and the spread between seeds beside it: one seed per configuration is not enough to
compare configurations, bench/RESULTS.md).

    python bench/quality_table.py bench_out                     # every *.jsonl in the folder
    python bench/quality_table.py a/quality_all.jsonl b/quality_all.jsonl

A configuration is a model with all of its run's flags but the seed and those that may differ between
the calls of one run (bench/quality.py's PER_CALL_FLAGS: --impl, --out, --stop-after, --device, ...);
for ours, its model's config in place of --preset and --set, since a preset's fields may change between
versions (the twenty-seventh session added value_residual and unet_skips to long-documents). Runs that
stopped early (cut) count apart. The calls of one run continued through quality.py --checkpoint, each
written to its own file, are one run.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections import defaultdict
from statistics import mean
from typing import Any, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository's package
from block_recurrent_transformer_pytorch.config import BlockRecurrentConfig  # noqa: E402

BUCKETS = ("0k-1k", "1k-4k", "4k-16k", "16k-64k", "64k+")
# Every run of these models first stalls near 2 bits/byte of training loss; how late it falls under
# this line decides much of where it ends (bench/RESULTS.md, fifteenth session)
PLATEAU_BPB = 1.2
# the seed, and the flags of one call (bench/quality.py's PER_CALL_FLAGS; tests/test_quality_table.py keeps the
# two lists alike): runs differing only in them are one configuration. But for a --seconds run, whose untimed
# steps are steps trained off the clock, untimed_steps is part of its configuration.
NOT_CONFIGURATION = ("seed", "impl", "out", "stop_after", "stop_at_step", "untimed_steps", "compile_cache", "device",
                     "corpora", "checkpoint")
# ours' flags that only choose its model, which its recorded model config says in full
MODEL_FLAGS = ("preset", "set")


def model_settings(config: dict[str, Any]) -> dict[str, Any]:
    """Ours' recorded model config (the preset with --set; since the twenty-seventh session every field) as
    every field of BlockRecurrentConfig, "model.<field>": a record written before a field existed reads as one
    with that field at its default, the seed's model (the defaults never change). A whole float reads as the
    int it equals: --set logit_softcap=15 recorded 15, the preset's logit_softcap=15.0 records 15.0, one model."""
    try:
        complete = BlockRecurrentConfig(**config).to_dict()
    except (TypeError, ValueError):  # a record this version cannot read: its fields as they are
        complete = config
    return {f"model.{k}": int(v) if isinstance(v, float) and v.is_integer() else v for k, v in complete.items()}


def load_runs(paths: list[str]) -> list[dict[str, Any]]:
    """Each run of the files named (or *.jsonl of the folders named): its config record's flags
    ("args"), seed and configuration key, its training curve (step, bits/byte), its clock (step, timed
    seconds so far), its result record (None if it has none) and the untimed steps its clock began after;
    with quality.py --checkpoint, the step a call resumed at and the step it saved at (None where it did
    not). A run that --checkpoint trained over several calls, each writing its own file, is one run
    (join_calls)."""
    files: list[str] = []
    for path in paths:
        files += sorted(glob.glob(os.path.join(path, "*.jsonl"))) if os.path.isdir(path) else [path]
    runs: dict[tuple[str, str], dict[str, Any]] = {}
    for name in files:
        with open(name) as f:
            for line in f:
                record = json.loads(line) if line.strip() else None
                if not record or "impl" not in record:
                    continue
                run = runs.setdefault((name, record["impl"]),
                                      dict(file=name, impl=record["impl"], args={}, model={}, curve=[], clock=[],
                                           result=None, resumed_at=None, saved_at=None))
                if record.get("kind") == "config":
                    run["args"] = record.get("args", {})
                    run["model"] = model_settings(record["config"]) if record.get("config") else {}
                elif record.get("kind") == "resume":
                    run["resumed_at"] = record["steps"]
                elif record.get("kind") == "checkpoint":
                    run["saved_at"] = record["steps"]
                elif record.get("kind") == "train" and "bpb" in record:
                    run["curve"].append((record["step"], record["bpb"]))
                    if record.get("train_s") is not None:
                        run["clock"].append((record["step"], record["train_s"]))
                elif record.get("kind") == "result":
                    run["result"] = record
    for run in runs.values():
        args = run["args"]
        run["seed"] = args.get("seed")
        ignored = set(NOT_CONFIGURATION) - ({"untimed_steps"} if args.get("seconds") is not None else set())
        ignored |= set(MODEL_FLAGS) if run["model"] else set()
        run["configuration"] = json.dumps({**{k: v for k, v in args.items() if k not in ignored}, **run["model"]},
                                          sort_keys=True)
        # each call of a run is timed after its own untimed steps, and its result counts them all; a joined run's
        # start+s is its first call's (from its first two logged stretches of timed steps, which a call logging
        # fewer would take from the next call)
        run["clock_untimed_steps"] = (run["result"] or {}).get("untimed_steps", args.get("untimed_steps"))
    return join_calls(list(runs.values()))


def join_calls(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls of one --checkpoint run (same checkpoint file, configuration and seed), each a run of its own
    file, joined into its first call, whatever the order the files came in: a call that resumed at the step
    where the run's last call saved it continues it (its curve and clock go on; the call that ends the run
    brings its result and file). A call that did not resume starts a run of its own, even under a checkpoint
    file used before. Left out, with a warning: a call that continues no run among the files (its earlier
    calls are not there, or another call continued the run from that step already), and a call that resumed
    but neither saved nor ended the run (killed: the next call resumed where it had). The joined run's clock
    keeps the first call's untimed steps, after which its clock began."""
    open_runs: dict[tuple, dict[str, Any]] = {}  # runs whose last call saved them, by (key, step saved at)
    first_calls = [run for run in runs if run["resumed_at"] is None]  # the runs, in the order the files gave them
    resumed_calls = sorted((run for run in runs if run["resumed_at"] is not None), key=lambda run: run["resumed_at"])
    for call in first_calls + resumed_calls:  # a run's calls in the order its steps went
        key = (call["args"].get("checkpoint"), call["configuration"], call["seed"])
        if call["resumed_at"] is None:
            run = call
        elif call["saved_at"] is None and call["result"] is None:
            print(f"{call['file']}: {call['impl']} resumed at step {call['resumed_at']} but neither saved nor ended "
                  f"its run (killed?): left out", file=sys.stderr)
            continue
        else:
            run = open_runs.pop((key, call["resumed_at"]), None)
            if run is None:
                print(f"{call['file']}: {call['impl']} resumed at step {call['resumed_at']} a run none of the files "
                      f"given saved there, or one another call continued from there: left out", file=sys.stderr)
                continue
            run["curve"] += call["curve"]
            run["clock"] += call["clock"]
            run["result"], run["file"], run["saved_at"] = call["result"], call["file"], call["saved_at"]
        if key[0] and run["result"] is None and run["saved_at"] is not None:
            open_runs[(key, run["saved_at"])] = run
    return first_calls


def left_plateau_at(curve: list[tuple[int, float]]) -> Optional[int]:
    """The first logged step whose training loss (bits/byte, the mean since the last log) is under
    PLATEAU_BPB; None if none is."""
    return next((step for step, bpb in curve if bpb < PLATEAU_BPB), None)


def slow_start_s(clock: list[tuple[int, float]], untimed_steps: int) -> Optional[float]:
    """Seconds the first logged stretch of timed steps took beyond the pace of the next stretch: in a
    --seconds run, chiefly compilation or graph capture that fell inside the clock (about 0 when the
    untimed steps held all of it), but any change of pace shows too (a kNN store filling up slows the
    later steps, and the figure goes negative). None without two logged stretches of timed steps."""
    timed = [(step, seconds) for step, seconds in clock if step > untimed_steps]
    if len(timed) < 2 or timed[1][0] <= timed[0][0]:
        return None
    (first_step, first_s), (next_step, next_s) = timed[:2]
    pace = (next_s - first_s) / (next_step - first_step)
    return first_s - (first_step - untimed_steps) * pace


def _cell(value: Optional[float], width: int = 7, decimals: int = 4) -> str:
    return f"{value:{width}.{decimals}f}" if value is not None else f"{'-':>{width}}"


def run_lines(runs: list[dict[str, Any]]) -> list[str]:
    """One line per run: parameters, tokens, tokens/s, the seconds its clock lost at the start
    (slow_start_s), bits/byte overall and by offset, with states reset, and the first logged step
    where its training loss was under PLATEAU_BPB."""
    lines = [f"{'run':28} {'seed':>4} {'params':>7} {'tokens':>9} {'tok/s':>8} {'start+s':>7} {'bpb':>7} "
             + " ".join(f"{b:>7}" for b in BUCKETS) + f"  nostate  <{PLATEAU_BPB} at"]
    for run in runs:
        res = run["result"]
        if res is None:
            lines.append(f"{run['impl']:28} {str(run['seed']):>4} (no result)")
            continue
        ev, ns = res["eval"], res.get("nostate_eval")
        untimed = run["clock_untimed_steps"]
        late = slow_start_s(run["clock"], untimed) if untimed is not None else None
        late = None if late is None else round(late, 1) + 0.0  # + 0.0: 0.0, not -0.0
        name = run["impl"] + (" (cut)" if res.get("cut") else "")
        lines.append(f"{name:28} {str(run['seed']):>4} {res['params'] / 1e6:6.2f}M {res['tokens'] / 1e6:8.1f}M "
                     f"{res['tokens_per_s'] or 0:8d} {_cell(late, decimals=1)} "
                     f"{_cell(ev['bpb'])} "
                     + " ".join(_cell(ev["by_offset"].get(b, {}).get("bpb")) for b in BUCKETS)
                     + f"  {_cell(ns['bpb']) if ns else '-':>7}  {str(left_plateau_at(run['curve']) or '-'):>8}")
    return lines


def mean_by_offset(evaluations: list[dict[str, Any]]) -> dict[str, Optional[float]]:
    """The mean bits/byte of each offset bucket over evaluations (None where one has no bytes there)."""
    means = {}
    for b in BUCKETS:
        values = [e["by_offset"].get(b, {}).get("bpb") for e in evaluations]
        means[b] = mean(values) if values and None not in values else None
    return means


def configuration_summaries(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per configuration (cut runs apart) with a result: its model, seeds, mean bits/byte overall, by
    offset and with states reset, and the lowest and highest of its seeds' figures."""
    groups: dict[tuple[str, bool], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        if run["result"] is not None:
            groups[(run["configuration"], bool(run["result"].get("cut")))].append(run)
    summaries = []
    for (configuration, cut), members in groups.items():
        evals = [m["result"]["eval"] for m in members]
        nostate = [m["result"]["nostate_eval"]["bpb"] for m in members if m["result"].get("nostate_eval")]
        bpbs = [e["bpb"] for e in evals]
        summaries.append(dict(model=members[0]["result"]["model"], cut=cut, configuration=json.loads(configuration),
                              seeds=sorted((m["seed"] for m in members), key=str), bpb=mean(bpbs), low=min(bpbs),
                              high=max(bpbs), by_offset=mean_by_offset(evals),
                              nostate=mean(nostate) if len(nostate) == len(members) else None))
    return summaries


def configuration_lines(summaries: list[dict[str, Any]]) -> list[str]:
    """One line per configuration: its seeds, mean bits/byte (lowest..highest), means by offset, and
    then the flags that set it apart from the other configurations."""
    keys = {k for s in summaries for k in s["configuration"]}
    # a key that only some configurations have (ours' model.*, the XL's --preset) differs only among those
    varying = sorted(k for k in keys if len({json.dumps(s["configuration"][k]) for s in summaries
                                             if k in s["configuration"]}) > 1)
    lines = [f"{'model':14} {'seeds':>9} {'mean bpb':>8} {'low..high':>15} " + " ".join(f"{b:>7}" for b in BUCKETS)
             + "  nostate  flags that differ"]
    for s in summaries:
        flags = " ".join(f"{k}={s['configuration'][k]}" for k in varying if k in s["configuration"])
        lines.append(f"{s['model'] + (' (cut)' if s['cut'] else ''):14} {','.join(map(str, s['seeds'])):>9} "
                     f"{s['bpb']:8.4f} {s['low']:7.4f}..{s['high']:.4f} "
                     + " ".join(_cell(s["by_offset"][b]) for b in BUCKETS) + f"  {_cell(s['nostate'])}  {flags}")
    return lines


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="quality.py JSONL files, or folders of them")
    args = parser.parse_args(argv)
    runs = load_runs(args.paths)
    summaries = configuration_summaries(runs)
    print("\n".join(run_lines(runs)))
    # also where every configuration has one seed: its line names the flags that set it apart, which
    # the runs' names (quality_<i>_<model>, per call) do not
    if len(summaries) > 1 or any(len(s["seeds"]) > 1 for s in summaries):
        print("\nper configuration, over its seeds:")
        print("\n".join(configuration_lines(summaries)))
    return summaries


if __name__ == "__main__":
    main()
