"""requirements.txt and setup.py name the same dependencies: the library's own and the test extra."""

import runpy
from pathlib import Path

import setuptools

REPO = Path(__file__).resolve().parents[1]


def setup_arguments(monkeypatch) -> dict:
    """The keywords setup.py hands setuptools.setup, captured instead of building anything."""
    captured: dict = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    monkeypatch.chdir(REPO)  # setup.py reads README.md from the working directory
    runpy.run_path(str(REPO / "setup.py"))
    return captured


def test_requirements_txt_lists_the_library_and_test_requirements_of_setup_py(monkeypatch):
    setup = setup_arguments(monkeypatch)
    expected = set(setup["install_requires"]) | set(setup["extras_require"]["test"])
    lines = (REPO / "requirements.txt").read_text().splitlines()
    listed = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    assert len(listed) == len(set(listed)), "a requirement listed twice"
    assert set(listed) == expected
