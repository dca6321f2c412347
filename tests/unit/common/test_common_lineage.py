"""Lineage records (schema 2): the file manifest and its hash, findable locations (Kubeflow URIs, s3:// mirrors, hub
revisions), the run context and environment, signing, and bad records."""

from __future__ import annotations

import hashlib
import json
import sys

import pytest

from components.common import lineage, storage
from components.common.io import atomic_dir, atomic_dest, sha256_path
from components.common.lineage import (
    LINEAGE_FILE,
    locate,
    read_lineage,
    run_context,
    sign,
    verify_signature,
    write_lineage,
)


def _old_sha256_path(path):
    """The directory hash as MedBridge computed it before the file manifest: it must not change."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file() and p.name != "lineage.json":
            h.update(p.relative_to(path).as_posix().encode() + b"\0")
            h.update(hashlib.sha256(p.read_bytes()).hexdigest().encode() + b"\n")
    return h.hexdigest()


def _dir(root, files):
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_directory_hash_is_unchanged_and_listed_per_file(tmp_path):
    # "a-b/x" sorts before "a/b" as a string but after it by path components: the order must stay the old one.
    d = _dir(tmp_path / "d", {"a/b": b"1", "a-b/x": b"2", "z": b"3", "sub/lineage.json": b"ignored"})
    rec = write_lineage(d, step="s", artifact="a")
    assert rec["sha256"] == sha256_path(d) == _old_sha256_path(d)
    assert set(rec["files"]) == {"a/b", "a-b/x", "z"}  # lineage.json at any depth is left out
    assert rec["files"]["z"] == hashlib.sha256(b"3").hexdigest()
    assert rec["schema_version"] == 2


@pytest.mark.parametrize(
    "name, dest",
    [
        (".diagnosis.ab12_x9.tmp", "diagnosis"),  # an atomic_dir temporary lands on its destination
        (".model.v2.ab12_x9.tmp", "model.v2"),  # a destination with a dot in its name
        ("diagnosis", "diagnosis"),  # any other directory is itself
    ],
)
def test_atomic_dest(tmp_path, name, dest):
    assert atomic_dest(tmp_path / name) == tmp_path / dest


def test_record_names_the_final_directory_not_the_temporary(tmp_path):
    with atomic_dir(tmp_path / "out") as t:
        (t / "f").write_text("x")
        rec = write_lineage(t, step="s", artifact="a")
    assert rec["location"] == str(tmp_path / "out")


def test_kubeflow_locations_come_from_the_executor_input(tmp_path, monkeypatch):
    """Under Kubeflow the step sees /minio/... mounts; the record holds the artifact URIs an auditor can reach."""
    executor_input = {
        "inputs": {"artifacts": {"diag_set": {"artifacts": [{"uri": f"{tmp_path}/in/diag_set"}]}}},
        "outputs": {"artifacts": {"diagnosis": {"artifacts": [{"uri": "minio://mlpipeline/v2/run-1/diagnose/diagnosis"}]}}},
    }
    monkeypatch.setattr(sys, "argv", ["executor_main", "--executor_input", json.dumps(executor_input)])
    uris = lineage.artifact_uris()
    assert uris["/minio/mlpipeline/v2/run-1/diagnose/diagnosis"] == "minio://mlpipeline/v2/run-1/diagnose/diagnosis"
    assert locate("/minio/mlpipeline/v2/run-1/diagnose/diagnosis") == "minio://mlpipeline/v2/run-1/diagnose/diagnosis"
    assert locate("/s3/bucket/x/y", uris={}) == "s3://bucket/x/y"  # a mount prefix without the executor input
    assert locate("/gcs/bucket/x", uris={}) == "gs://bucket/x"
    assert locate(tmp_path / "local", uris={}) == str(tmp_path / "local")  # a local run keeps the local path


def test_s3_inputs_are_recorded_by_uri_with_the_content_hash(s3, tmp_path, monkeypatch):
    client, bucket = s3
    monkeypatch.setenv("MEDBRIDGE_CACHE", str(tmp_path / "cache"))
    src = _dir(tmp_path / "model", {"config.json": b"{}", "model.safetensors": b"w" * 100})
    storage.upload_dir(src, f"s3://{bucket}/ckpt", progress=False)
    uri = f"s3://{bucket}/ckpt"
    out = _dir(tmp_path / "out", {"x": b"1"})
    # Not resolved in this process and not in the cache: recorded as given, without a hash.
    storage._MIRRORS.clear()
    assert write_lineage(out, step="s", artifact="a", inputs={"model": uri})["inputs"]["model"]["sha256"] is None
    mirror = storage.download_prefix(uri, tmp_path / "cache" / "models", progress=False)
    rec = write_lineage(out, step="s", artifact="a", inputs={"model": uri, "root": mirror})
    assert rec["inputs"]["model"] == {"ref": uri, "kind": "s3", "sha256": sha256_path(src)}
    assert rec["inputs"]["model"]["sha256"] == storage.remote_sha256(uri)  # the same hash the watcher keys it by
    assert rec["inputs"]["root"]["ref"] == uri  # a local mirror is recorded by the URI it mirrors


def test_hub_models_get_revision_and_content_hash(tmp_path, monkeypatch):
    cache = tmp_path / "hf"
    repo = cache / "models--org--tiny"
    rev = "0123456789abcdef0123456789abcdef01234567"
    snap = _dir(repo / "snapshots" / rev, {"config.json": b"{}", "model.safetensors": b"weights"})
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    rec = write_lineage(_dir(tmp_path / "o", {"x": b"1"}), step="s", artifact="a", inputs={"model": "org/tiny"})
    assert rec["inputs"]["model"] == {"ref": "org/tiny", "kind": "hub", "sha256": sha256_path(snap), "revision": rev}


def test_run_context_and_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("KFP_RUN_ID", "run-123")
    monkeypatch.setenv("KFP_TASK_NAME", "diagnose")
    monkeypatch.setenv("KFP_POD_NAME", "medbridge-abc-diagnose-1")
    monkeypatch.setenv("MEDBRIDGE_IMAGE", "ghcr.io/medbridge/medbridge-serve@sha256:" + "ab" * 32)
    monkeypatch.setattr(lineage, "_step_started", lineage.time.time() - 7200)  # the step began two hours ago
    rec = write_lineage(_dir(tmp_path / "o", {"x": b"1"}), step="s", artifact="a")
    assert rec["run"] == {"kfp_run_id": "run-123", "kfp_task_name": "diagnose", "kfp_pod_name": "medbridge-abc-diagnose-1",
                          "image": "ghcr.io/medbridge/medbridge-serve@sha256:" + "ab" * 32,
                          "image_digest": "sha256:" + "ab" * 32}
    env = rec["environment"]
    assert set(env["packages"]) == {"torch", "transformers", "trl", "peft", "vllm", "deepspeed", "kfp"}
    assert env["packages"]["vllm"] is None and env["packages"]["kfp"]  # absent ones are null, present ones a version
    assert env["wall_seconds"] >= 7200 and env["gpu"]["count"] == 0 and env["gpu_hours"] == 0.0  # no GPU here
    assert run_context({})["kfp_run_id"] is None  # a local run: unknown, not invented


def test_signing(tmp_path, monkeypatch):
    d = _dir(tmp_path / "d", {"x": b"1"})
    monkeypatch.setenv("MEDBRIDGE_LINEAGE_KEY", "k" * 32)
    rec = write_lineage(d, step="s", artifact="a", params={"tau": 0.5})
    on_disk = read_lineage(d)
    assert on_disk["signature"]["alg"] == "hmac-sha256" and verify_signature(on_disk, b"k" * 32) == "valid"
    assert "k" * 32 not in (d / LINEAGE_FILE).read_text()  # the key itself is never recorded
    edited = {**on_disk, "params": {"tau": 0.4}}
    assert verify_signature(edited, b"k" * 32) == "invalid"  # a record edited after signing
    assert verify_signature(on_disk, b"another-key-000000") == "invalid"
    assert verify_signature({k: v for k, v in rec.items() if k != "signature"}, b"k" * 32) == "unsigned"
    assert verify_signature(sign(edited, b"k" * 32), b"k" * 32) == "valid"


def test_credentials_never_reach_a_record(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_plantedSecretValue123")
    rec = write_lineage(
        _dir(tmp_path / "d", {"x": b"1"}), step="s", artifact="a",
        inputs={"judge": "https://user:pw123456@judge.example.org/v1"},
        params={"hf_token": "hf_plantedSecretValue123", "note": "token hf_plantedSecretValue123", "k": 4},
        summary="used hf_plantedSecretValue123",
    )
    text = (tmp_path / "d" / LINEAGE_FILE).read_text()
    assert "hf_plantedSecretValue123" not in text and "pw123456" not in text
    assert rec["params"]["k"] == 4 and rec["params"]["hf_token"] == "[redacted]"


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", r"lineage.json: line 1: not valid JSON"),  # truncated or hand-edited
        ("[1, 2]", r"expected a JSON object, got list"),  # valid JSON, wrong shape
        ('{"schema_version": 7}', r"unknown lineage schema version 7"),  # a newer MedBridge wrote it
    ],
)
def test_bad_records_are_one_line_errors(tmp_path, content, message):
    d = tmp_path / "d"
    d.mkdir()
    (d / LINEAGE_FILE).write_text(content)
    with pytest.raises(ValueError, match=message):
        read_lineage(d)
