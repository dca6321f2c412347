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


def test_remote_manifest_hash_equals_the_local_hash(s3, tmp_path):
    """The content hash of what is stored equals sha256_path of the directory it was uploaded from (lineage.json
    left out on both sides), whatever the upload's part size: it is read from the bytes, never from ETags."""
    from components.common.io import sha256_path

    client, bucket = s3
    src = _model_dir(tmp_path / "src")
    (src / "lineage.json").write_text("{}")
    (src / "a-b").mkdir()
    (src / "a-b" / "x.bin").write_bytes(b"order by path components, not by string")
    upload_dir(src, f"s3://{bucket}/m/one", progress=False, multipart_threshold=5 * (1 << 20))
    upload_dir(src, f"s3://{bucket}/m/two", progress=False, multipart_threshold=1024, multipart_chunksize=5 * (1 << 20))
    one, two = storage.remote_sha256(f"s3://{bucket}/m/one"), storage.remote_sha256(f"s3://{bucket}/m/two")
    assert one == two == sha256_path(src)


def test_remote_manifest_reuses_known_hashes_until_an_object_changes(s3, tmp_path):
    client, bucket = s3
    upload_dir(_model_dir(tmp_path / "src"), f"s3://{bucket}/m", progress=False)
    first = storage.remote_manifest(f"s3://{bucket}/m")
    poisoned = {rel: {**m, "sha256": "cached"} for rel, m in first.items()}
    again = storage.remote_manifest(f"s3://{bucket}/m", known=poisoned)
    assert {m["sha256"] for m in again.values()} == {"cached"}  # unchanged ETag + size: the known hash is kept
    client.put_object(Bucket=bucket, Key="m/config.json", Body=b'{"model_type": "changed"}')
    changed = storage.remote_manifest(f"s3://{bucket}/m", known=poisoned)
    assert changed["config.json"]["sha256"] not in ("cached", first["config.json"]["sha256"])  # overwritten: re-read
    assert changed["model.safetensors"]["sha256"] == "cached"


def test_mirror_is_found_again_and_names_its_uri(s3, tmp_path, monkeypatch):
    client, bucket = s3
    monkeypatch.setenv("MEDBRIDGE_CACHE", str(tmp_path / "cache"))
    upload_dir(_model_dir(tmp_path / "src"), f"s3://{bucket}/models/tiny", progress=False)
    local = download_prefix(f"s3://{bucket}/models/tiny", tmp_path / "cache" / "models", progress=False)
    assert storage.mirrored_uri(local) == f"s3://{bucket}/models/tiny"
    assert storage.mirrored_uri(tmp_path / "src") is None  # not a mirror
    storage._MIRRORS.clear()  # a later process: found through the default cache and its manifest
    assert storage.mirror_of(f"s3://{bucket}/models/tiny") == local
    assert storage.mirror_of(f"s3://{bucket}/models/other") is None


def test_unreachable_endpoint_is_one_line(tmp_path, monkeypatch, capsys):
    """No server at the endpoint: an error naming the URI and the endpoint, exit status 1, no traceback."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    monkeypatch.setenv("MEDBRIDGE_S3_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    client = storage.s3_client()
    client.meta.config.retries["max_attempts"] = 1
    with pytest.raises(ConnectionError, match=f"s3://bkt/m: cannot reach the S3 endpoint http://127.0.0.1:{port}"):
        storage.list_objects("s3://bkt/m", client=client)
    assert storage.main(["--quiet", "download", "s3://bkt/m", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the S3 endpoint" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_download_and_hash(s3, tmp_path, capsys):
    from components.common.io import sha256_path

    client, bucket = s3
    src = _model_dir(tmp_path / "src")
    upload_dir(src, f"s3://{bucket}/ckpts/a", progress=False)
    assert storage.main(["--quiet", "download", f"s3://{bucket}/ckpts/a", str(tmp_path / "cache")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "cache" / bucket / "ckpts" / "a")
    assert storage.main(["hash", f"s3://{bucket}/ckpts/a"]) == 0
    assert capsys.readouterr().out.strip() == sha256_path(src)
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
