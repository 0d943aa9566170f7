"""train.py --fsdp on CPU (gloo, 2 processes, tiny model): FSDP2's sharded gradients equal one process's
(bench/fsdp_check.py; its negative control, --perturb-rank1, is the shared code test_ddp_check.py tests), a
stopped and resumed sharded run equals an uninterrupted one and leaves whole, loadable weights, and the
flags it cannot combine with are refused."""

from __future__ import annotations

import os
import sys

import pytest
import torch
import torch.distributed as dist

import train
from block_recurrent_transformer_pytorch import BlockRecurrentTransformer
from tests.test_ddp_check import run_check
from tests.test_train import flags, records, tiny, two_ranks


@pytest.mark.parametrize("script, extra", [
    ("bench/fsdp_check.py", ()),
    # the first layer's values reach every later layer, and its memory values projected inside its own call
    ("bench/fsdp_check.py", ("--value-residual", "--unet-skips", "--memory-kv-from-inputs")),
    # a layer runs once per block: recomputing an earlier block finds its weights freed by the backward of a
    # later one, which FSDP of torch <= 2.11 (the GPU machine's) leaves to train.py to gather again
    ("tests/fsdp_check_torch211.py", ("--activation-checkpointing", "--use-compressed-mem", "--bptt-segments", "2")),
], ids=["plain", "value-residual-unet-from-inputs", "checkpointing-compressed-bptt-torch211"])
def test_sharded_gradients_equal_one_process_gradients(tmp_path, script, extra):
    done, record = run_check(tmp_path, "--no-speed", *extra, script=script)
    assert done.returncode == 0, done.stderr[-3000:]
    assert record["bench"] == "fsdp_check" and record["fsdp"] and record["world_size"] == 2
    check = record["check"]
    assert check["passed"] and check["max_rel_err"] < 1e-5 and check["zero_grad_params"] == 0
    assert "FSDP: sharded over 2 processes" in done.stderr and "PASSED" in done.stdout


def _runs_worker(rank: int, port: int, argvs: list[list[str]]) -> None:
    """train.main of each argv in turn, in one job of 2 processes (cheaper than a job per run)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo")  # joined before: train.main leaves it up for the next run
    status = max(train.main(argv) for argv in argvs)
    dist.barrier()
    dist.destroy_process_group()
    sys.exit(status)


def test_sharded_run_resumes_exactly_and_saves_whole_weights(tmp_path):
    common = dict(max_steps=4, eval_interval=2, sample_interval=3, sample_length=4, prime_length=4, fsdp=True)
    stopped = tiny(tmp_path, "parts", stop_at_step=2, **common)
    runs = [flags(tiny(tmp_path, "whole", **common)), flags(stopped), ["--resume", "--out-dir", stopped.out_dir]]
    with two_ranks(_runs_worker, runs) as workers:
        for w in workers:
            w.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0]

    whole, parts = (train.load_checkpoint(tmp_path / run / train.CHECKPOINT) for run in ("whole", "parts"))
    assert whole["step"] == parts["step"] == 4 and whole["world_size"] == 2
    plain = train.build_model(tiny(tmp_path)).state_dict()
    assert whole["model"].keys() == plain.keys()  # whole tensors under the usual names
    for name, weight in whole["model"].items():
        assert weight.shape == plain[name].shape and torch.equal(weight, parts["model"][name]), name
    for a, b in zip(whole["optimizer"]["state"].values(), parts["optimizer"]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)

    def logged(run: str) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in records(tmp_path / run)]

    assert logged("parts") == logged("whole")
    assert {"val", "val_full", "test_full"} <= {r["kind"] for r in logged("whole")}
    final = BlockRecurrentTransformer.from_pretrained(tmp_path / "whole" / "final")
    assert all(torch.equal(w, whole["model"][k]) for k, w in final.state_dict().items())
    # the checkpoint has the one-process layout: a single process continues it without --fsdp
    assert train.main(["--resume", "--no-fsdp", "--max-steps", "5", "--out-dir", str(tmp_path / "whole")]) == 0
    assert train.load_checkpoint(tmp_path / "whole" / train.CHECKPOINT)["step"] == 5


@pytest.mark.parametrize("given", [["--cuda-graph"], ["--compile"], ["--cuda-graph", "--compile"]])
def test_fsdp_refuses_the_fast_path_flags(tmp_path, capsys, given):
    assert train.main(flags(tiny(tmp_path, max_steps=1)) + ["--fsdp", *given]) == 1
    err = capsys.readouterr().err
    assert f"--fsdp trains on the eager loop, not with {' '.join(given)}" in err and f"drop {' '.join(given)}" in err
