"""components.common.storage against a real HTTP S3 fake (fixture `s3` in conftest.py), reached the way a MinIO is:
through MEDBRIDGE_S3_ENDPOINT with path-style addressing."""

from __future__ import annotations

import json

import pytest

from components.common import storage
from components.common.storage import download_prefix, parse_s3_uri, upload_dir


class CountingClient:
    """Wraps a boto3 client and counts the files it downloads."""

    def __init__(self, client):
        self._client, self.downloaded = client, []

    def download_file(self, bucket, key, filename, **kw):
        self.downloaded.append(key)
        return self._client.download_file(bucket, key, filename, **kw)

    def __getattr__(self, name):
        return getattr(self._client, name)


def _model_dir(root):
    """A small directory shaped like a save_pretrained output, with a nested folder."""
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text('{"model_type": "qwen2_5_vl"}')
    (root / "model.safetensors").write_bytes(bytes(range(256)) * 40)
    (root / "sub" / "tokenizer.json").write_text('{"version": "1.0"}')
    return root


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("s3://models/qwen/7b", ("models", "qwen/7b")),  # plain bucket + prefix
        ("s3://models/qwen/7b/", ("models", "qwen/7b")),  # trailing slash: same prefix
        ("s3://models", ("models", "")),  # whole bucket
        ("s3://models/", ("models", "")),  # whole bucket, trailing slash
        ("s3://my.bucket-1/a", ("my.bucket-1", "a")),  # dots and dashes are valid in bucket names
    ],
)
def test_parse_s3_uri_valid(uri, expected):
    assert parse_s3_uri(uri) == expected


@pytest.mark.parametrize(
    "uri, message",
    [
        ("/models/qwen", "not an S3 URI"),  # a local path
        ("gs://models/qwen", "not an S3 URI"),  # another cloud's scheme
        ("s3:/models/qwen", "not an S3 URI"),  # one slash
        ("s3:///qwen", "names no bucket"),  # empty bucket
        ("s3://Models/qwen", "not a valid bucket name"),  # uppercase is invalid in S3 bucket names
        ("s3://my_bucket/qwen", "not a valid bucket name"),  # underscore is invalid
        ("s3://ab/qwen", "not a valid bucket name"),  # shorter than 3 characters
        ("s3://models/a//b", "path segment"),  # empty segment
        ("s3://models/a/../../etc", "path segment"),  # '..' could escape the cache when mirrored
        (None, "not an S3 URI"),  # not a string at all
    ],
)
def test_parse_s3_uri_errors_name_the_uri(uri, message):
    with pytest.raises(ValueError, match=message) as err:
        parse_s3_uri(uri)
    assert repr(uri) in str(err.value)


def test_endpoint_precedence(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://aws-var:9000")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("MEDBRIDGE_S3_ENDPOINT", raising=False)
    assert storage.endpoint_url() == "http://aws-var:9000"  # boto3's generic variable
    monkeypatch.setenv("MEDBRIDGE_S3_ENDPOINT", "http://minio.medbridge:9000")
    assert storage.endpoint_url() == "http://minio.medbridge:9000"  # MedBridge's own setting wins
    client = storage.s3_client()
    assert client.meta.endpoint_url == "http://minio.medbridge:9000"
    assert client.meta.config.s3["addressing_style"] == "path"  # MinIO needs path-style requests


def test_round_trip(s3, tmp_path):
    client, bucket = s3
    src = _model_dir(tmp_path / "src")
    uris = upload_dir(src, f"s3://{bucket}/ckpts/step-10", progress=False)
    assert uris[-1] == f"s3://{bucket}/ckpts/step-10/config.json"  # uploaded last: readers wait for it
    assert sorted(uris) == sorted(f"s3://{bucket}/ckpts/step-10/{rel}" for rel in _tree(src))

    local = download_prefix(f"s3://{bucket}/ckpts/step-10/", tmp_path / "cache", progress=False)
    assert local == tmp_path / "cache" / bucket / "ckpts" / "step-10"
    assert _tree(local) == _tree(src)
    # The manifest lives beside the mirror, never inside it (it must not join a model dir or its hash).
    manifest = json.loads((local.parent / ".step-10.s3-manifest.json").read_text())
    assert set(manifest["files"]) == set(_tree(src))
    assert manifest["files"]["model.safetensors"]["size"] == 256 * 40


def test_second_download_fetches_nothing_then_only_changes(s3, tmp_path):
    client, bucket = s3
    src = _model_dir(tmp_path / "src")
    upload_dir(src, f"s3://{bucket}/m", progress=False)
    first = CountingClient(client)
    local = download_prefix(f"s3://{bucket}/m", tmp_path / "cache", client=first, progress=False)
    assert len(first.downloaded) == 3

    again = CountingClient(client)
    assert download_prefix(f"s3://{bucket}/m", tmp_path / "cache", client=again, progress=False) == local
    assert again.downloaded == []  # cache reuse: size + ETag match the manifest

    # One object changes, one disappears, one is added: only the changed and the new one are fetched,
    # the deleted one is removed locally.
    client.put_object(Bucket=bucket, Key="m/config.json", Body=b'{"model_type": "changed"}')
    client.delete_object(Bucket=bucket, Key="m/sub/tokenizer.json")
    client.put_object(Bucket=bucket, Key="m/extra.txt", Body=b"new")
    third = CountingClient(client)
    download_prefix(f"s3://{bucket}/m", tmp_path / "cache", client=third, progress=False)
    assert sorted(third.downloaded) == ["m/config.json", "m/extra.txt"]
    assert _tree(local) == {
        "config.json": b'{"model_type": "changed"}',
        "extra.txt": b"new",
        "model.safetensors": bytes(range(256)) * 40,
    }


def test_locally_damaged_file_is_fetched_again(s3, tmp_path):
    client, bucket = s3
    upload_dir(_model_dir(tmp_path / "src"), f"s3://{bucket}/m", progress=False)
    local = download_prefix(f"s3://{bucket}/m", tmp_path / "cache", progress=False)
    (local / "model.safetensors").write_bytes(b"truncated")
    spy = CountingClient(client)
    download_prefix(f"s3://{bucket}/m", tmp_path / "cache", client=spy, progress=False)
    assert spy.downloaded == ["m/model.safetensors"]
    assert (local / "model.safetensors").read_bytes() == bytes(range(256)) * 40


def test_missing_prefix_error_names_the_uri(s3, tmp_path):
    client, bucket = s3
    client.put_object(Bucket=bucket, Key="models/other/config.json", Body=b"{}")
    uri = f"s3://{bucket}/models/qwen"
    with pytest.raises(FileNotFoundError, match="no objects under this prefix") as err:
        download_prefix(uri, tmp_path / "cache", progress=False)
    assert uri in str(err.value)
    assert not (tmp_path / "cache" / bucket / "models" / "qwen").exists()


def test_single_object_uri_says_to_pass_the_folder(s3, tmp_path):
    client, bucket = s3
    client.put_object(Bucket=bucket, Key="data/pathmnist.npz", Body=b"npz")
    with pytest.raises(FileNotFoundError, match="is a single object"):
        download_prefix(f"s3://{bucket}/data/pathmnist.npz", tmp_path / "cache", progress=False)


def test_missing_bucket_error_names_the_uri(s3, tmp_path):
    uri = "s3://no-such-bucket-here/models"
    with pytest.raises(FileNotFoundError, match="NoSuchBucket") as err:
        download_prefix(uri, tmp_path / "cache", progress=False)
    assert uri in str(err.value)


def test_upload_errors(s3, tmp_path):
    client, bucket = s3
    with pytest.raises(FileNotFoundError, match="no such directory"):
        upload_dir(tmp_path / "absent", f"s3://{bucket}/x", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="nothing to upload"):
        upload_dir(tmp_path / "empty", f"s3://{bucket}/x", progress=False)
    with pytest.raises(ValueError, match="not an S3 URI"):
        upload_dir(tmp_path / "empty", "/local/path", progress=False)


def test_multipart_upload_round_trip(s3, tmp_path):
    """A file above the threshold goes up in parts (ETag '<md5>-<parts>') and comes back byte-identical."""
    client, bucket = s3
    src = tmp_path / "big"
    src.mkdir()
    payload = bytes(range(256)) * (6 * 4096 + 7)  # ~6 MiB: two parts at S3's 5 MiB minimum part size
    (src / "shard.bin").write_bytes(payload)
    upload_dir(src, f"s3://{bucket}/big", progress=False, multipart_threshold=5 << 20, multipart_chunksize=5 << 20)
    assert client.head_object(Bucket=bucket, Key="big/shard.bin")["ETag"].strip('"').endswith("-2")
    local = download_prefix(f"s3://{bucket}/big", tmp_path / "cache", progress=False)
    assert (local / "shard.bin").read_bytes() == payload


def test_pending_checkpoints_and_markers(s3, tmp_path):
    client, bucket = s3
    root, state = f"s3://{bucket}/ckpts", f"s3://{bucket}/state/submitted"
    client.put_object(Bucket=bucket, Key="ckpts/step-100/config.json", Body=b"{}")
    client.put_object(Bucket=bucket, Key="ckpts/step-200/model.safetensors", Body=b"w")  # still uploading
    client.put_object(Bucket=bucket, Key="ckpts/step-300/config.json", Body=b"{}")
    client.put_object(Bucket=bucket, Key="ckpts/notes.txt", Body=b"not a checkpoint")
    assert sorted(storage.pending_checkpoints(root, state)) == [f"{root}/step-100", f"{root}/step-300"]
    assert len(storage.pending_checkpoints(root, state, limit=1)) == 1

    marker = storage.mark_submitted(f"{root}/step-100", state, note="run-1")
    assert marker == f"s3://{bucket}/state/submitted/{bucket}/ckpts/step-100.json"
    assert storage.pending_checkpoints(root, state) == [f"{root}/step-300"]

    client.put_object(Bucket=bucket, Key="ckpts/step-200/config.json", Body=b"{}")  # upload finished
    assert sorted(storage.pending_checkpoints(root, state)) == [f"{root}/step-200", f"{root}/step-300"]


def test_checkpoints_are_listed_oldest_first(monkeypatch):
    """Order comes from the ready file's LastModified, not from the name (S3 lists keys by name)."""
    import datetime as dt

    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    listing = [
        {"Key": "c/a-late/config.json", "LastModified": t0 + dt.timedelta(hours=2)},
        {"Key": "c/b-early/config.json", "LastModified": t0},
        {"Key": "c/b-early/model.safetensors", "LastModified": t0 + dt.timedelta(hours=9)},  # not the ready file
        {"Key": "c/c-mid/config.json", "LastModified": t0 + dt.timedelta(hours=1)},
        {"Key": "c/c-mid/nested/x/config.json", "LastModified": t0},  # deeper: not a direct child
    ]
    monkeypatch.setattr(storage, "_list_objects", lambda client, bucket, prefix, uri: listing)
    assert storage.list_checkpoints("s3://bkt/c", client=object()) == [
        "s3://bkt/c/b-early",
        "s3://bkt/c/c-mid",
        "s3://bkt/c/a-late",
    ]


def test_cli_download_and_checkpoints(s3, tmp_path, capsys):
    client, bucket = s3
    upload_dir(_model_dir(tmp_path / "src"), f"s3://{bucket}/ckpts/a", progress=False)
    assert storage.main(["--quiet", "download", f"s3://{bucket}/ckpts/a", str(tmp_path / "cache")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cache" / bucket / "ckpts" / "a")
    state = f"s3://{bucket}/state"
    assert storage.main(["checkpoints", f"s3://{bucket}/ckpts", "--state", state]) == 0
    assert capsys.readouterr().out.split() == [f"s3://{bucket}/ckpts/a"]
    assert storage.main(["mark", f"s3://{bucket}/ckpts/a", "--state", state]) == 0
    capsys.readouterr()
    assert storage.main(["checkpoints", f"s3://{bucket}/ckpts", "--state", state]) == 0
    assert capsys.readouterr().out == ""
    # A bad URI is a one-line error and exit status 1, not a traceback.
    assert storage.main(["download", "models/qwen", str(tmp_path)]) == 1
    assert "not an S3 URI" in capsys.readouterr().err


def test_model_reference_s3_resolves_to_the_mirror(s3, tmp_path):
    """components.common.modeling opens s3:// model references through download_prefix."""
    from components.common.modeling import resolve_model_dir

    client, bucket = s3
    upload_dir(_model_dir(tmp_path / "src"), f"s3://{bucket}/models/tiny", progress=False)
    local = resolve_model_dir(f"s3://{bucket}/models/tiny", cache_dir=tmp_path / "cache")
    assert local == str(tmp_path / "cache" / "models" / bucket / "models" / "tiny")
    assert _tree(tmp_path / "cache" / "models" / bucket / "models" / "tiny") == _tree(tmp_path / "src")
