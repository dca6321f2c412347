"""The task fingerprint keys by content and parameters, never by location."""

from __future__ import annotations

import shutil

from components.common.fingerprint import input_digest, task_fingerprint
from components.common.lineage import write_lineage


def test_fingerprint_follows_content_not_paths(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    (a / "x.txt").write_text("1")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    params = {"lr": 1e-5, "steps": 3}
    fa = task_fingerprint("sft", {"data": a, "model": "org/m"}, params)
    assert fa == task_fingerprint("sft", {"data": b, "model": "org/m"}, dict(reversed(params.items())))  # same content
    assert fa != task_fingerprint("sft", {"data": a, "model": "org/m"}, {**params, "lr": 2e-5})  # a parameter changed
    assert fa != task_fingerprint("grpo", {"data": a, "model": "org/m"}, params)  # another step
    assert fa != task_fingerprint("sft", {"data": a, "model": "org/other"}, params)  # another model reference
    (b / "x.txt").write_text("2")
    assert fa != task_fingerprint("sft", {"data": b, "model": "org/m"}, params)  # the content changed


def test_artifacts_are_keyed_by_their_recorded_hash(tmp_path):
    d = tmp_path / "art"
    d.mkdir()
    (d / "records.jsonl").write_text("{}\n")
    rec = write_lineage(d, step="curate", artifact="diag_set")
    assert input_digest(d) == f"lineage:{rec['sha256']}"
    assert input_digest("s3://bucket/prefix") == "ref:s3://bucket/prefix" and input_digest("") == "none"
