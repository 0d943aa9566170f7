"""bench/ddp_check.py on CPU (gloo, 2 processes, tiny model): DDP gradients through train.py's loop equal
the single-process gradients of the same global batch, and a perturbed rank makes the check fail."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_check(tmp_path: Path, *extra: str, script: str = "bench/ddp_check.py") -> tuple[subprocess.CompletedProcess, dict]:
    """torchrun of the script with 2 CPU processes; the completed process and its JSON record."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "check.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(port), script, "--device", "cpu", "--tiny", "--out", str(out), *extra],
        cwd=REPO, capture_output=True, text=True, timeout=180,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))},
    )
    assert out.exists(), done.stderr[-3000:]
    lines = out.read_text().splitlines()
    assert len(lines) == 1
    return done, json.loads(lines[0])


def test_two_processes_give_the_single_process_gradients_and_both_speeds(tmp_path):
    done, record = run_check(tmp_path, "--window", "1", "--windows", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert record["world_size"] == 2 and record["backend"] == "gloo" and not record["perturb_rank1"]
    check = record["check"]
    assert check["passed"] and check["max_rel_err"] < check["rtol"] == 1e-5
    assert check["global_rel_err"] < 1e-5 and check["max_abs_diff"] < 1e-6
    assert check["params"] > 20 and check["zero_grad_params"] == 0 and check["grad_norm"] > 0
    # the global batch: 2 ranks x 4 rows per micro-step, 2 micro-steps, as train.py accumulates them
    assert (check["global_batch"], check["micro_batch"], check["grad_accum"]) == (8, 4, 2)

    speed = record["speed"]
    assert speed["one"]["world_size"] == 1 and speed["all"]["world_size"] == 2
    assert speed["all"]["tokens_per_step"] == 2 * speed["one"]["tokens_per_step"] == 2 * 4 * 64 * 2
    assert speed["one"]["tokens_per_s"] > 0 and speed["all"]["tokens_per_s"] > 0
    assert speed["ratio"] == speed["all"]["tokens_per_s"] / speed["one"]["tokens_per_s"]
    # stdout: the JSON line, then the markdown table (train.py's own output went to stderr)
    stdout = done.stdout.splitlines()
    assert json.loads(stdout[0]) == record
    assert "| card | torch | world size | tokens/s | ratio to 1 | MFU | peak GiB |" in stdout
    assert any(line.startswith("| cpu | ") and "| 2 |" in line for line in stdout)
    assert "gradient check" in done.stdout and "PASSED" in done.stdout


def test_a_rank_training_on_other_bytes_fails_the_check(tmp_path):
    # the negative control: rank 1 reports its batch but trains on shifted bytes
    done, record = run_check(tmp_path, "--perturb-rank1", "--no-speed")
    assert done.returncode != 0
    check = record["check"]
    assert record["perturb_rank1"] and not check["passed"]
    assert check["max_rel_err"] > 1e-2 and check["global_rel_err"] > 1e-2
    assert "speed" not in record and "FAILED" in done.stdout


def test_train_step_path_all_reduces_the_single_process_gradients(tmp_path):
    # --cuda-graph: TrainStep (eager on CPU) and the gradients all-reduced by hand, not by DDP
    done, record = run_check(tmp_path, "--cuda-graph", "--no-speed")
    assert done.returncode == 0, done.stderr[-3000:]
    check = record["check"]
    assert check["passed"] and check["max_rel_err"] < 1e-5 and check["zero_grad_params"] == 0
