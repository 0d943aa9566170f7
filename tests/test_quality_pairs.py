"""bench/quality_pairs.py: paired differences between two quality.py runs, document by document."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import quality_pairs  # noqa: E402


def _write(path: Path, impl: str, by_document: list[float], document_bytes=None, **args) -> str:
    evaluation = dict(bpb=0.0, by_document=by_document)
    if document_bytes is not None:
        evaluation["document_bytes"] = document_bytes
    records = [dict(impl=impl, kind="config", args=dict(corpus="linux_c", eval_bytes=1e6, **args)),
               dict(impl=impl, kind="train", step=1), dict(impl=impl, kind="result", eval=evaluation)]
    with open(path, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return f"{path}:{impl}"


def test_a_pair_is_weighted_by_bytes_over_the_documents_both_evaluated(tmp_path, capsys):
    """A evaluated three documents, B four (the first three the same): the fourth is left out, and a
    long document counts for its bytes."""
    path = tmp_path / "runs.jsonl"
    a = _write(path, "quality_0_ours", [1.0, 0.5, 0.8], [100, 300, 600])
    b = _write(path, "quality_1_ours_unread", [1.1, 0.4, 0.9, 5.0], [100, 300, 600, 50])
    (pair,) = quality_pairs.main([a, b])
    assert pair["documents"] == 3 and pair["better"] == 2
    assert pair["bpb"] == pytest.approx((-0.1 * 100 + 0.1 * 300 - 0.1 * 600) / 1000)
    assert pair["median"] == pytest.approx(-0.1)
    assert "over 3 documents; A better in 2" in capsys.readouterr().out


def test_runs_of_other_held_out_documents_are_refused(tmp_path):
    path = tmp_path / "runs.jsonl"
    a = _write(path, "a", [1.0, 0.5], [100, 300])
    b = _write(path, "b", [1.0, 0.5], [100, 301])
    with pytest.raises(SystemExit, match="evaluated other documents"):
        quality_pairs.main([a, b])


def test_runs_are_named_and_paired_or_refused(tmp_path):
    path = tmp_path / "runs.jsonl"
    a = _write(path, "a", [1.0], [100])
    with pytest.raises(SystemExit, match="holds no config and result records of a run 'missing'"):
        quality_pairs.main([a, f"{path}:missing"])
    with pytest.raises(SystemExit, match="a run is FILE:IMPL"):
        quality_pairs.main([a, str(path)])
    with pytest.raises(SystemExit):  # argparse: an odd number of runs
        quality_pairs.main([a])


def test_records_without_document_bytes_take_them_from_the_corpus_they_name(tmp_path):
    """Records written before quality.py kept each document's bytes: the held-out documents are read
    again from the run's corpus (here the tiny corpus of this repository's files, cut at 2,048 bytes,
    so both weigh alike and the difference is the plain mean)."""
    path = tmp_path / "runs.jsonl"
    flags = dict(tiny=True, corpora=None, eval_max_doc=2048)
    a = _write(path, "a", [1.0, 2.0], **flags)
    b = _write(path, "b", [1.2, 1.9], **flags)
    (pair,) = quality_pairs.main([a, b])
    assert pair["documents"] == 2 and pair["bpb"] == pytest.approx(-0.05)


def test_by_length_pairs_each_group_of_documents_apart(tmp_path, capsys):
    """--by-length 1k,4k: documents under 1,024 bytes, from 1,024 to 4,095, and 4,096 or more, each group
    weighted by its own bytes; a group with no document says so."""
    path = tmp_path / "runs.jsonl"
    a = _write(path, "a", [1.0, 0.5, 0.8, 0.7], [100, 300, 5000, 1000])
    b = _write(path, "b", [1.1, 0.4, 0.6, 0.7], [100, 300, 5000, 1000])
    (pair,) = quality_pairs.main([a, b, "--by-length", "1k,4k"])
    short, middle, long = pair["by_length"]
    assert (short["from_bytes"], short["below_bytes"], short["documents"], short["better"]) == (0, 1024, 3, 1)
    assert short["bpb"] == pytest.approx((-0.1 * 100 + 0.1 * 300 + 0 * 1000) / 1400)
    assert (middle["from_bytes"], middle["below_bytes"], middle["documents"]) == (1024, 4096, 0)
    assert (long["below_bytes"], long["documents"], long["better"]) == (None, 1, 0)
    assert long["bpb"] == pytest.approx(0.2)
    out = capsys.readouterr().out
    assert "documents of 1,024 to 4,095 bytes: none" in out
    assert "documents of 4,096 bytes or more: +0.2000 over 1" in out
    for bad in ("4k,1k", "0,1k", "1k,x", ""):
        with pytest.raises(SystemExit, match="--by-length takes ascending positive byte counts"):
            quality_pairs.main([a, b, "--by-length", bad])
