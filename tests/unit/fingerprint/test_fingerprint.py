"""The fingerprint step: content fingerprints of remote inputs, against the S3 server (tests/conftest.py `s3`)."""

from __future__ import annotations

import pytest

from components.fingerprint.__main__ import main
from components.fingerprint.config import FingerprintConfig, parse_refs
from components.fingerprint.run import fingerprint, hub_digest


def fp(refs: dict, step: str = "curate") -> str:
    return fingerprint(FingerprintConfig(step=step), refs)


def test_s3_prefix_is_keyed_by_its_content(s3):
    client, bucket = s3
    client.put_object(Bucket=bucket, Key="data/medmnist/octmnist.npz", Body=b"v1")
    client.put_object(Bucket=bucket, Key="data/medmnist/pathmnist.npz", Body=b"p")
    refs = {"medmnist_root": f"s3://{bucket}/data/medmnist"}
    first = fp(refs)
    assert fp(refs) == first  # nothing changed: the same key, so Kubeflow may reuse the cached result
    client.put_object(Bucket=bucket, Key="data/medmnist/octmnist.npz", Body=b"v2")  # same name, new content
    changed = fp(refs)
    assert changed != first
    client.put_object(Bucket=bucket, Key="data/medmnist/new.npz", Body=b"n")  # a new file under the prefix
    assert fp(refs) not in (first, changed)
    client.put_object(Bucket=bucket, Key="data/other/x", Body=b"x")  # outside the prefix: no effect
    assert fp(refs) == fp(refs)


def test_moved_alias_changes_the_key(s3):
    """s3://models/latest overwritten by a new checkpoint: same reference, different fingerprint."""
    client, bucket = s3
    client.put_object(Bucket=bucket, Key="models/latest/config.json", Body=b'{"step": 100}')
    before = fp({"model_ref": f"s3://{bucket}/models/latest"}, step="probe")
    client.put_object(Bucket=bucket, Key="models/latest/config.json", Body=b'{"step": 200}')
    assert fp({"model_ref": f"s3://{bucket}/models/latest"}, step="probe") != before


def test_step_and_input_names_are_part_of_the_key(tmp_path):
    (tmp_path / "f").write_text("x")
    refs = {"model_ref": str(tmp_path)}
    assert fp(refs, step="probe") != fp(refs, step="curate")
    assert fp(refs) != fp({"labeller_model": str(tmp_path)})


def test_local_directory_is_keyed_by_content(tmp_path):
    (tmp_path / "a.npz").write_bytes(b"1")
    before = fp({"medmnist_root": str(tmp_path)})
    (tmp_path / "a.npz").write_bytes(b"2")
    assert fp({"medmnist_root": str(tmp_path)}) != before


def test_hub_id_offline_uses_the_cached_commit(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path))
    ref = tmp_path / "models--Qwen--Qwen2.5-VL-7B-Instruct" / "refs"
    ref.mkdir(parents=True)
    (ref / "main").write_text("abc123\n")
    assert hub_digest("Qwen/Qwen2.5-VL-7B-Instruct") == "hub:Qwen/Qwen2.5-VL-7B-Instruct@abc123"
    (ref / "main").write_text("def456\n")  # the cache was updated to a new revision
    assert hub_digest("Qwen/Qwen2.5-VL-7B-Instruct").endswith("@def456")
    assert hub_digest("Qwen/Not-Cached") == "ref:Qwen/Not-Cached"  # unknowable here: keyed by the name only


def test_empty_prefix_is_an_error_naming_it(s3, capsys):
    _, bucket = s3
    assert main(["--step", "curate", "--refs", f"medmnist_root=s3://{bucket}/nothing-here"]) == 2
    err = capsys.readouterr().err
    assert f"s3://{bucket}/nothing-here" in err and "no objects" in err


def test_launcher_prints_and_writes_the_fingerprint(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    out = tmp_path / "fp.txt"
    assert main(["--step", "probe", "--refs", f"model_ref={tmp_path / 'd'},empty=", "--out", str(out)]) == 0
    value = out.read_text().strip()
    assert len(value) == 64 and value in capsys.readouterr().out


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("a=s3://x/y,b=Qwen/Q", {"a": "s3://x/y", "b": "Qwen/Q"}),  # two references
        ("a=s3://x/y=z", {"a": "s3://x/y=z"}),  # '=' inside a reference is kept
        ("a=,b=/m", {"b": "/m"}),  # an empty reference (optional pipeline input) is skipped
        (" a = /m , ", {"a": "/m"}),  # blanks and a trailing comma
    ],
)
def test_parse_refs(text, parsed):
    assert parse_refs(text) == parsed


def test_parse_refs_rejects_a_bare_value():
    with pytest.raises(ValueError, match="expected NAME=REF"):
        parse_refs("s3://x")
