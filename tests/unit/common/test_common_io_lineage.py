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


def test_written_artifacts_are_readable_by_other_users(tmp_path, monkeypatch, tiny_model_dir):
    """Whatever created the files (tempfile's 0600 included), an artifact is readable by group and others; under
    the cache root ($MEDBRIDGE_CACHE) also writable by the group."""
    import os
    import stat
    import tempfile

    from components.common.io import atomic_write_text

    def modes(root):
        return {p.relative_to(root).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}

    out = tmp_path / "art"
    with atomic_dir(out) as t:
        fd, name = tempfile.mkstemp(dir=t)  # 0600, as a library writing through tempfile leaves it
        os.close(fd)
        (t / "sub").mkdir(mode=0o700)
        (t / "sub" / "w.bin").write_bytes(b"x")
        os.chmod(t / "sub" / "w.bin", 0o600)
    for rel, mode in modes(out).items():
        assert mode & 0o044 == 0o044, (rel, oct(mode))
        assert mode & 0o020 == 0, (rel, oct(mode))  # outside the cache: no group write
    assert all(m & 0o055 == 0o055 for r, m in modes(out).items() if (out / r).is_dir() or r == ".")
    for rel, mode in modes(tiny_model_dir).items():  # a model directory written by save_pretrained
        assert mode & 0o044 == 0o044, (rel, oct(mode))

    cache = tmp_path / "cache"
    monkeypatch.setenv("MEDBRIDGE_CACHE", str(cache))
    atomic_write_text(cache / "labels" / "x.jsonl", "{}\n")
    with atomic_dir(cache / "features" / "k") as t:
        (t / "f.npy").write_bytes(b"0")
    assert stat.S_IMODE((cache / "labels" / "x.jsonl").stat().st_mode) & 0o064 == 0o064
    assert all(m & 0o020 for m in modes(cache / "features" / "k").values())
