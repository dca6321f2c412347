"""Atomic writes, content hashes and lineage records."""

from __future__ import annotations

import json

import pytest

from components.common.io import atomic_dir, atomic_write_text, read_jsonl, sha256_path, write_jsonl
from components.common.lineage import LINEAGE_FILE, is_synthetic, read_lineage, write_lineage


def test_atomic_dir_replaces_whole_or_keeps_old(tmp_path):
    dest = tmp_path / "art"
    with atomic_dir(dest) as tmp:
        (tmp / "a.txt").write_text("v1")
    assert (dest / "a.txt").read_text() == "v1"
    # A failing writer leaves the previous artifact untouched and no temp directory behind.
    with pytest.raises(RuntimeError):
        with atomic_dir(dest) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("crash mid-write")
    assert (dest / "a.txt").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]


def test_atomic_write_text_leaves_no_temp_on_error(tmp_path, monkeypatch):
    target = tmp_path / "f.json"
    atomic_write_text(target, "old")
    import os

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_read_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(ValueError, match=r"r\.jsonl: line 2"):
        read_jsonl(p)


def test_sha256_path_depends_on_content_and_names_not_lineage(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "x").write_text("1")
    h1 = sha256_path(d)
    (d / LINEAGE_FILE).write_text("{}")  # excluded: a directory can record its own hash
    assert sha256_path(d) == h1
    (d / "x").write_text("2")
    assert sha256_path(d) != h1
    (d / "x").write_text("1")
    (d / "x").rename(d / "y")
    assert sha256_path(d) != h1


def test_lineage_chains_history_and_marks_synthetic(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "weights.bin").write_bytes(b"random")
    write_lineage(raw, step="tiny-model", artifact="model", synthetic=True)  # what a generator of synthetic data does
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "README.md").write_text("tiny model (random weights)")  # text is no marker: only lineage says synthetic
    assert not write_lineage(plain, step="x", artifact="y")["synthetic"]
    assert is_synthetic(raw) and is_synthetic(raw / "weights.bin") and not is_synthetic(plain)
    assert not is_synthetic("Qwen/Qwen2.5-VL-7B-Instruct") and not is_synthetic(tmp_path / "missing")
    a = tmp_path / "a"
    with atomic_dir(a) as t:
        write_jsonl(t / "records.jsonl", [{"id": 1}])
        rec_a = write_lineage(t, step="curate", artifact="diag_set", inputs={"raw": raw}, params={"seed": 0}, summary="4 q")
    assert rec_a["synthetic"] is True  # an input built from random weights taints everything downstream
    assert rec_a["sha256"] == sha256_path(a)
    b = tmp_path / "b"
    with atomic_dir(b) as t:
        (t / "out.json").write_text("{}")
        rec_b = write_lineage(t, step="diagnose", artifact="diagnosis", inputs={"data": a, "model": "Qwen/Qwen2.5-VL-7B-Instruct"})
    assert rec_b["inputs"]["data"] == {
        "sha256": rec_a["sha256"], "step": "curate", "artifact": "diag_set", "ref": str(a), "kind": "artifact"
    }
    assert rec_b["inputs"]["model"]["sha256"] is None  # a hub id not in the local cache is recorded as given
    assert rec_b["inputs"]["model"]["kind"] == "hub"
    assert [h["step"] for h in rec_b["history"]] == ["tiny-model", "curate"]
    assert rec_b["synthetic"] is True
    assert read_lineage(b)["code_version"].startswith("medbridge")
    assert json.loads((b / LINEAGE_FILE).read_text())["params"] == {}
