"""components.common.checkpoints: a checkpoint counts only when whole; broken ones are skipped with a warning."""

from __future__ import annotations

import json
import logging

import pytest

from components.common.checkpoints import (
    COMPLETE_FILE,
    check_complete,
    checkpoint_root,
    discard_incomplete,
    list_checkpoints,
    mark_complete,
    newest_complete,
    prune,
)


def make_ckpt(root, step, complete=True):
    d = root / f"checkpoint-{step}"
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"w" * 100)
    (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if complete:
        mark_complete(d, step)
    return d


def _truncate(d):
    (d / "model.safetensors").write_bytes(b"w" * 50)


def _change(d):
    (d / "trainer_state.json").write_text(json.dumps({"global_step": 99}))  # same size as step 10's


def _drop(d):
    (d / "trainer_state.json").unlink()


def _garble_marker(d):
    (d / COMPLETE_FILE).write_text("{not json")


def _no_marker(d):
    (d / COMPLETE_FILE).unlink()


@pytest.mark.parametrize(
    "damage, reason",
    [
        (None, None),  # untouched: whole
        (_no_marker, "did not finish"),  # killed while saving: the marker is written last
        (_truncate, "has 50 bytes, 100 were written"),  # a file cut short
        (_change, "changed after it was written"),  # same size, other content (small files are hashed)
        (_drop, "is missing"),  # a file gone
        (_garble_marker, "unreadable"),  # the marker itself torn
    ],
)
def test_check_complete(tmp_path, damage, reason):
    d = make_ckpt(tmp_path, 10)
    if damage:
        damage(d)
    got = check_complete(d)
    assert (got is None) if reason is None else (reason in got)


def test_newest_complete_skips_broken_with_a_warning(tmp_path, caplog):
    make_ckpt(tmp_path, 10)
    make_ckpt(tmp_path, 20)
    _truncate(make_ckpt(tmp_path, 30))
    make_ckpt(tmp_path, 40, complete=False)
    (tmp_path / "README.md").write_text("not a checkpoint")
    with caplog.at_level(logging.WARNING, logger="components.common.checkpoints"):
        found = newest_complete(tmp_path)
    assert found == tmp_path / "checkpoint-20"  # the newest WHOLE one; 40 and 30 never loaded
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "checkpoint-40" in warned and "checkpoint-30" in warned and "checkpoint-10" not in warned
    assert newest_complete(tmp_path / "nothing-here") is None


def test_discard_incomplete_and_prune(tmp_path):
    for s in (5, 10, 15):
        make_ckpt(tmp_path, s)
    make_ckpt(tmp_path, 20, complete=False)
    assert [p.name for p in discard_incomplete(tmp_path)] == ["checkpoint-20"]
    assert [p.name for p in prune(tmp_path, {15, 5})] == ["checkpoint-10"]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-15", "checkpoint-5"]


def test_checkpoint_root_honours_the_cache_volume(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDBRIDGE_CACHE", str(tmp_path))
    assert checkpoint_root("grpo", "ab" * 32) == tmp_path / "checkpoints" / f"grpo-{'ab' * 8}"
