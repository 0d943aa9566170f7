"""README.md's commands run as written: its Python snippets are executed in order, in one namespace
(the generation snippet continues the seed's usage), at the sizes printed there; its train.py
commands parse; .ci/run runs exactly its set-up and test commands."""

import re
import shlex
from pathlib import Path

import pytest
import torch

import train

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.S | re.M)


def test_python_snippets_run_as_written():
    snippets = blocks("python")
    assert len(snippets) >= 2
    torch.manual_seed(0)
    namespace: dict = {}
    for snippet in snippets:
        exec(compile(snippet, "README.md", "exec"), namespace)
    assert namespace["out"].shape == (1, 1024, 20000)
    assert namespace["new"].shape == (1, 64)  # generate's length counts the prime
    assert namespace["token"].shape == (1,)
    # the library form of --preset long-documents is the model train.py builds for it
    cfg = train.resolve_config(train.parse_args(["--preset", "long-documents", "--doc-separator", "0"]))
    assert namespace["long_documents_model"].config == train.build_model(cfg).config


def test_train_commands_name_real_flags_and_files():
    commands = [line.split("#")[0] for block in blocks("bash") for line in block.splitlines()]
    commands = [line for line in commands if " train.py" in line]
    assert len(commands) == 3
    for line in commands:
        words = shlex.split(line)
        args = words[words.index("train.py") + 1:]
        cfg = train.resolve_config(train.parse_args(args))  # unknown flags and bad values exit here
        # made by the command before it, or the user's own file
        assert cfg.data is None or cfg.data.startswith("runs/") or cfg.data == "my_docs.bin"


@pytest.mark.parametrize("path", ["scripts/setup_dev.sh", "block_recurrent_transformer_pytorch"])
def test_named_paths_exist(path):
    assert path in README and (REPO / path).exists()


def test_ci_runs_the_readme_commands():
    setup_and_test = blocks("bash")[0].strip().splitlines()[:2]
    ci = [line for line in (REPO / ".ci/run").read_text().splitlines()
          if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert ci == setup_and_test
