"""`medbridge audit`: a small run (dataset -> model -> diagnosis, each with its lineage) is verified, then each kind
of damage is caught and named: a byte flipped in a model file, an edited line of records.jsonl, a deleted upstream
artifact, an edited hash in lineage.json, an artifact edited together with its lineage.json (caught by its
consumer; with a signing key, by its signature). Bad input is a row or one line, never a traceback; an s3://
prefix is audited on the real S3 server."""

from __future__ import annotations

import json
import shutil


from components.common.audit import audit
from components.common.io import atomic_dir, write_jsonl
from components.common.lineage import LINEAGE_FILE, write_lineage
from pipelines.cli import main as cli

KEY = b"audit-test-signing-key-0123456789"


def _run(root, monkeypatch=None, key=None):
    """A run directory shaped like kfp.local's: run/<task>/<output>, each output an artifact with lineage."""
    if key:
        monkeypatch.setenv("MEDBRIDGE_LINEAGE_KEY", key.decode())
    run = root / "medbridge-2026-11-29"
    data = run / "curate" / "diag_set"
    with atomic_dir(data) as t:
        write_jsonl(t / "records.jsonl", [{"id": f"q{i}", "question": "which?", "answer": "A"} for i in range(3)])
        (t / "images").mkdir()
        (t / "images" / "0.png").write_bytes(b"\x89PNG fake")
        write_lineage(t, step="curate", artifact="diag_set", params={"seed": 0})
    model = run / "sft" / "model"
    with atomic_dir(model) as t:
        (t / "config.json").write_text('{"model_type": "qwen2_5_vl"}')
        (t / "model.safetensors").write_bytes(bytes(range(256)) * 8)
        write_lineage(t, step="sft", artifact="model", inputs={"sft_set": data})
    diag = run / "diagnose" / "diagnosis"
    with atomic_dir(diag) as t:
        (t / "diagnosis.json").write_text('{"k": 4}')
        write_lineage(t, step="diagnose", artifact="diagnosis", inputs={"model": model, "diag_set": data})
    return run, data, model, diag


def _row(report, artifact, role=None):
    return next(r for r in report.rows if r.artifact == artifact and (role is None or r.role == role))


def test_untouched_run_is_verified(tmp_path):
    run, *_ = _run(tmp_path)
    report = audit(run)
    assert {r.artifact: r.status for r in report.rows} == {
        "curate/diag_set": "verified", "sft/model": "verified", "diagnose/diagnosis": "verified"}
    assert not report.tampered and all(r.role == "target" for r in report.rows)


def test_byte_flipped_in_a_model_file_is_named(tmp_path, capsys):
    run, _, model, _ = _run(tmp_path)
    weights = model / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0x01
    weights.write_bytes(bytes(data))
    row = _row(audit(run), "sft/model")
    assert row.status == "tampered" and row.changed == ["model.safetensors (changed)"]
    assert cli(["audit", str(run)]) == 1  # exit 1 on any tampered artifact
    out = capsys.readouterr().out
    assert "TAMPERED" in out and "model.safetensors (changed)" in out


def test_edited_line_of_records_is_named(tmp_path):
    run, data, *_ = _run(tmp_path)
    lines = (data / "records.jsonl").read_text().splitlines()
    lines[1] = lines[1].replace('"answer": "A"', '"answer": "B"')
    (data / "records.jsonl").write_text("\n".join(lines) + "\n")
    row = _row(audit(run), "curate/diag_set")
    assert row.status == "tampered" and row.changed == ["records.jsonl (changed)"]


def test_deleted_upstream_artifact_is_missing(tmp_path):
    run, data, model, diag = _run(tmp_path)
    shutil.rmtree(model)
    report = audit(diag)  # the diagnosis alone: its history names the model, which is gone
    assert _row(report, "diagnose/diagnosis").status == "verified"
    missing = _row(report, "sft/model", "upstream")
    assert missing.status == "missing" and str(model) in missing.detail
    assert _row(report, "curate/diag_set", "upstream").status == "verified"
    assert not report.tampered


def test_edited_hash_in_lineage_is_caught(tmp_path):
    run, data, *_ = _run(tmp_path)
    rec = json.loads((data / LINEAGE_FILE).read_text())
    rec["sha256"] = "0" * 64
    (data / LINEAGE_FILE).write_text(json.dumps(rec))
    row = _row(audit(run), "curate/diag_set")
    assert row.status == "tampered" and "recorded hash was edited" in row.detail


def _rewrite_with_matching_lineage(data):
    """Edit a file and recompute the artifact's own lineage.json to match: it passes its own check."""
    (data / "records.jsonl").write_text('{"id": "forged"}\n')
    rec = json.loads((data / LINEAGE_FILE).read_text())
    (data / LINEAGE_FILE).unlink()
    forged = write_lineage(data, step="curate", artifact="diag_set", params=rec["params"])
    return forged


def test_artifact_edited_with_its_lineage_is_caught_by_its_consumer(tmp_path):
    run, data, *_ = _run(tmp_path)
    _rewrite_with_matching_lineage(data)
    row = _row(audit(run), "curate/diag_set")
    assert row.status == "tampered" and "recorded it as" in row.detail  # the model's and the diagnosis's records


def test_with_a_key_an_edited_record_fails_its_signature(tmp_path, monkeypatch):
    run, data, *_ = _run(tmp_path, monkeypatch, key=KEY)
    monkeypatch.delenv("MEDBRIDGE_LINEAGE_KEY")
    rec = json.loads((data / LINEAGE_FILE).read_text())
    rec["params"] = {"seed": 1}  # a parameter rewritten, everything else intact
    (data / LINEAGE_FILE).write_text(json.dumps(rec))
    assert _row(audit(run), "curate/diag_set").status == "verified"  # without the key the content still matches
    row = _row(audit(run, key=KEY), "curate/diag_set")
    assert row.status == "tampered" and row.signature == "invalid" and "signature invalid" in row.detail
    assert _row(audit(run, key=KEY), "sft/model").signature == "valid"


def test_bad_input_is_a_row_or_one_line(tmp_path, capsys):
    run, data, *_ = _run(tmp_path)
    (data / LINEAGE_FILE).write_text("{truncated")
    row = _row(audit(run), "diag_set")
    assert row.status == "unverifiable" and "not valid JSON" in row.detail
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "weights.bin").write_bytes(b"x")
    assert cli(["audit", str(plain)]) == 2  # no lineage.json anywhere: one line, exit 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medbridge audit: error:") and "no lineage.json" in err and len(err.splitlines()) == 1
    assert cli(["audit", str(tmp_path / "nowhere")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_json_output(tmp_path, capsys):
    run, *_ = _run(tmp_path)
    assert cli(["audit", str(run), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema_version"] == 1 and doc["counts"]["verified"] == 3 and doc["key_used"] is False


def test_s3_prefix_is_audited_on_the_real_server(s3, tmp_path):
    from components.common.storage import upload_dir

    client, bucket = s3
    run, data, model, diag = _run(tmp_path)
    for d in (data, model, diag):
        upload_dir(d, f"s3://{bucket}/runs/r1/{d.parent.name}/{d.name}", progress=False)
    report = audit(f"s3://{bucket}/runs/r1")
    assert {r.status for r in report.rows if r.role == "target"} == {"verified"}
    client.put_object(Bucket=bucket, Key="runs/r1/sft/model/model.safetensors", Body=b"replaced")
    row = _row(audit(f"s3://{bucket}/runs/r1"), "sft/model")
    assert row.status == "tampered" and row.changed == ["model.safetensors (changed)"]
