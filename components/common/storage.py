"""S3 / MinIO storage: parse s3:// URIs, mirror a prefix into the local cache, upload a directory, hash what is stored.

    python -m components.common.storage download s3://models/qwen2.5-vl-7b /cache/models
    python -m components.common.storage upload runs/sft-42/model s3://models/medbridge/checkpoints/sft-42
    python -m components.common.storage hash s3://models/medbridge/checkpoints/sft-42

(Watching a prefix for new checkpoints is `medbridge watch`, pipelines/watch.py.)

Endpoint: MEDBRIDGE_S3_ENDPOINT if set, else boto3's own AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (MinIO, SeaweedFS,
Ceph RGW; path-style addressing is used with a custom endpoint), else AWS. Credentials come from boto3's usual chain
(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, which the cluster injects from the `medbridge-s3` Secret).

`download_prefix` mirrors s3://bucket/prefix into <cache_dir>/<bucket>/<prefix> and records each file's size and
ETag in a manifest beside that directory (`.<name>.s3-manifest.json`, outside the mirrored tree so it never becomes
part of a model directory or its hash). A second call fetches only what changed on the server and removes files
the server no longer has; every file is written under a temporary name and renamed into place, so an interrupted
download never leaves a half-written file where a model loader would open it. `mirror_of(uri)` finds that mirror
again (for lineage: the content a step read) and `mirrored_uri(dir)` names the URI a local mirror stands for.

`remote_manifest(uri)` is the sha256 manifest of what is stored under a prefix, computed by streaming the objects
(never from ETags, which depend on how a file was uploaded); `components.common.io.manifest_digest` of it equals
`sha256_path` of a local copy.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from components.common.io import atomic_file, manifest_digest, write_json

log = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".s3-manifest.json"
# Uploaded last, so that a reader polling for them (`medbridge watch` waits for config.json) never sees a
# checkpoint whose weights are still on their way.
UPLOAD_LAST = ("config.json", "lineage.json")
CACHE_ENV = "MEDBRIDGE_CACHE"
# s3:// URI -> local mirror, for the mirrors this process made (`mirror_of` also finds earlier ones).
_MIRRORS: dict[str, Path] = {}
MIRROR_DIRS = ("models", "data", "benchmarks")  # subfolders of cache_root() the steps mirror into
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")
_MiB = 1 << 20


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split `s3://bucket/some/prefix/` into `("bucket", "some/prefix")` (no leading or trailing slash).

    Raises ValueError naming the URI for anything that is not a well-formed S3 URI: another scheme, no bucket,
    an invalid bucket name, or `.`/`..`/empty path segments (which could escape the local cache when mirrored).
    """
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an S3 URI: expected s3://bucket/prefix")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket: expected s3://bucket/prefix")
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
        raise ValueError(
            f"{uri!r}: {bucket!r} is not a valid bucket name (3-63 characters: lowercase letters, digits, '.', '-')"
        )
    prefix = prefix.rstrip("/")
    if prefix:
        bad = [seg for seg in prefix.split("/") if seg in ("", ".", "..")]
        if bad:
            raise ValueError(f"{uri!r}: empty, '.' or '..' path segment in the prefix; write the prefix without them")
    return bucket, prefix


def cache_root() -> Path:
    """Where MedBridge keeps S3 mirrors and caches: $MEDBRIDGE_CACHE (the cluster's cache volume), else
    ~/.cache/medbridge. Read at call time, so a step honours the variable its pod sets."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "medbridge")


def local_dir(ref: str | Path, mirror_dir: str | Path, *, what: str = "source root") -> Path:
    """A local directory for `ref`: an s3:// URI is mirrored under `mirror_dir` (only what changed is fetched; see
    `download_prefix`); a local path must be an existing directory. Errors name the reference."""
    if str(ref).startswith("s3://"):
        return download_prefix(str(ref), mirror_dir)
    path = Path(ref).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{what} {str(ref)!r} is not a directory (pass a local directory or an s3:// URI)")
    return path


def endpoint_url() -> str | None:
    """The S3 endpoint MedBridge talks to (None = AWS itself)."""
    for var in ("MEDBRIDGE_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(var):
            return os.environ[var]
    return None


def s3_client(endpoint: str | None = None):
    """A boto3 S3 client for `endpoint` (default: `endpoint_url()`), with retries and MinIO-friendly addressing."""
    import boto3
    from botocore.config import Config

    endpoint = endpoint or endpoint_url()
    config = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=10,
        s3={"addressing_style": "path"} if endpoint else {},
    )
    region = boto3.session.Session().region_name or "us-east-1"
    return boto3.client("s3", endpoint_url=endpoint, region_name=region, config=config)


def _client_error(e: Exception, uri: str, client) -> Exception:
    """A ClientError turned into an error that names the URI and the endpoint."""
    err = getattr(e, "response", {}).get("Error", {})
    code, msg = err.get("Code", "?"), err.get("Message", str(e))
    where = f"{uri} (endpoint {client.meta.endpoint_url})"
    if code in ("NoSuchBucket", "404", "NoSuchKey"):
        return FileNotFoundError(f"{where}: {code}: {msg}")
    if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return PermissionError(
            f"{where}: {code}: {msg}; check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (Secret medbridge-s3)"
        )
    return RuntimeError(f"{where}: {code}: {msg}")


def _unreachable(e: Exception, uri: str, client) -> ConnectionError:
    """A botocore connection failure (no server, DNS, TLS) as one line naming the URI and the endpoint."""
    return ConnectionError(
        f"{uri}: cannot reach the S3 endpoint {client.meta.endpoint_url} ({type(e).__name__}: {e}); "
        "check MEDBRIDGE_S3_ENDPOINT / AWS_ENDPOINT_URL"
    )


def _is_botocore(e: Exception) -> bool:
    from botocore.exceptions import BotoCoreError

    return isinstance(e, BotoCoreError) or isinstance(getattr(e, "__cause__", None), BotoCoreError)


def _list_objects(client, bucket: str, key_prefix: str, uri: str) -> list[dict[str, Any]]:
    from botocore.exceptions import BotoCoreError, ClientError

    objects: list[dict[str, Any]] = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix):
            objects.extend(page.get("Contents", []))
    except ClientError as e:
        raise _client_error(e, uri, client) from None
    except BotoCoreError as e:
        raise _unreachable(e, uri, client) from None
    return objects


def _object_exists(client, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        client.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError:
        return False


def _relative_key(key: str, key_prefix: str, uri: str) -> str:
    rel = key[len(key_prefix) :]
    if not rel or any(part in ("", ".", "..") for part in rel.split("/")):
        raise ValueError(f"{uri}: object key {key!r} cannot be mirrored safely (empty, '.' or '..' path segment)")
    return rel


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not enabled)


def _read_manifest(path: Path, uri: str, endpoint: str | None) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        log.warning("%s: unreadable download manifest (%s); downloading everything again", path, e)
        return {}
    if data.get("uri") != uri or data.get("endpoint") != endpoint:
        return {}  # the same bucket/prefix on another server: nothing local can be trusted
    return dict(data.get("files", {}))


def download_prefix(
    uri: str,
    cache_dir: str | Path,
    *,
    client=None,
    progress: bool = True,
    max_concurrency: int = 8,
) -> Path:
    """Mirror every object under `uri` into `<cache_dir>/<bucket>/<prefix>` and return that directory.

    Files whose size and ETag match the local manifest (and whose local copy still has that size) are not fetched
    again; files the server no longer lists are removed. Raises FileNotFoundError naming the URI when nothing is
    stored under the prefix (or the bucket does not exist).
    """
    from boto3.s3.transfer import TransferConfig

    bucket, prefix = parse_s3_uri(uri)
    client = client or s3_client()
    endpoint = client.meta.endpoint_url
    local = Path(cache_dir) / bucket / prefix if prefix else Path(cache_dir) / bucket
    key_prefix = f"{prefix}/" if prefix else ""

    objects = [o for o in _list_objects(client, bucket, key_prefix, uri) if not o["Key"].endswith("/")]
    if not objects:
        hint = ""
        if prefix and _object_exists(client, bucket, prefix):
            hint = f"; s3://{bucket}/{prefix} is a single object, pass the prefix (folder) that holds it"
        raise FileNotFoundError(f"{uri}: no objects under this prefix (endpoint {client.meta.endpoint_url}){hint}")
    remote = {
        _relative_key(o["Key"], key_prefix, uri): {"size": int(o["Size"]), "etag": str(o["ETag"]).strip('"')}
        for o in objects
    }

    manifest_path = local.parent / f".{local.name}{MANIFEST_SUFFIX}"
    old = _read_manifest(manifest_path, uri, endpoint)

    def up_to_date(rel: str) -> bool:
        path = local / rel
        return old.get(rel) == remote[rel] and path.is_file() and path.stat().st_size == remote[rel]["size"]

    fresh = {rel: meta for rel, meta in remote.items() if up_to_date(rel)}
    todo = sorted(rel for rel in remote if rel not in fresh)
    stale = sorted(rel for rel in old if rel not in remote)
    for rel in stale:
        (local / rel).unlink(missing_ok=True)

    config = TransferConfig(max_concurrency=max_concurrency, multipart_chunksize=64 * _MiB)
    manifest = dict(fresh)
    nbytes = sum(remote[rel]["size"] for rel in todo)
    try:
        with _progress(nbytes, f"download {uri}", progress and bool(todo)) as bar:
            for rel in todo:
                with atomic_file(local / rel) as tmp:
                    try:
                        client.download_file(bucket, key_prefix + rel, str(tmp), Config=config, Callback=bar.update)
                    except Exception as e:  # ClientError, or S3TransferFailedError wrapping one
                        if hasattr(e, "response"):
                            raise _client_error(e, f"s3://{bucket}/{key_prefix}{rel}", client) from None
                        if _is_botocore(e):
                            raise _unreachable(e, f"s3://{bucket}/{key_prefix}{rel}", client) from None
                        raise
                manifest[rel] = remote[rel]
    finally:
        # Written even when interrupted: the next call then fetches only what is missing.
        write_json(manifest_path, {"uri": uri, "endpoint": endpoint, "files": manifest})
    log.info(
        "%s -> %s: fetched %d file(s) (%d bytes), reused %d, removed %d",
        uri, local, len(todo), nbytes, len(fresh), len(stale),
    )
    _MIRRORS[uri.rstrip("/")] = local
    return local


def _manifest_path(local: Path) -> Path:
    return local.parent / f".{local.name}{MANIFEST_SUFFIX}"


def mirrored_uri(local: str | Path) -> str | None:
    """The s3:// URI a local directory mirrors (from its download manifest), or None for any other path."""
    local = Path(local)
    manifest = _manifest_path(local)
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    uri = data.get("uri") if isinstance(data, dict) else None
    return str(uri) if uri else None


def mirror_of(uri: str) -> Path | None:
    """The local mirror of `uri` a step of this process (or an earlier one, in the default cache) made, or None."""
    uri = uri.rstrip("/")
    if uri in _MIRRORS and _MIRRORS[uri].is_dir():
        return _MIRRORS[uri]
    try:
        bucket, prefix = parse_s3_uri(uri)
    except ValueError:
        return None
    for sub in MIRROR_DIRS:
        local = cache_root() / sub / bucket / prefix if prefix else cache_root() / sub / bucket
        if local.is_dir() and (mirrored_uri(local) or "").rstrip("/") == uri:
            return local
    return None


def upload_dir(
    local_dir: str | Path,
    uri: str,
    *,
    client=None,
    progress: bool = True,
    multipart_threshold: int = 64 * _MiB,
    multipart_chunksize: int = 64 * _MiB,
    max_concurrency: int = 8,
) -> list[str]:
    """Upload every file under `local_dir` to `uri/<relative path>` and return the uploaded URIs.

    Large files go up as parallel multipart uploads (boto3's managed transfer). `config.json` and `lineage.json`
    are uploaded last, so a reader that waits for them sees a complete model or artifact directory.
    """
    from boto3.s3.transfer import TransferConfig

    bucket, prefix = parse_s3_uri(uri)
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        raise FileNotFoundError(f"{local_dir}: no such directory to upload to {uri}")
    files = sorted((p for p in local_dir.rglob("*") if p.is_file()), key=lambda p: (p.name in UPLOAD_LAST, str(p)))
    if not files:
        raise ValueError(f"{local_dir}: empty directory, nothing to upload to {uri}")
    client = client or s3_client()
    config = TransferConfig(
        multipart_threshold=multipart_threshold, multipart_chunksize=multipart_chunksize, max_concurrency=max_concurrency
    )
    uploaded = []
    with _progress(sum(p.stat().st_size for p in files), f"upload {uri}", progress) as bar:
        for path in files:
            rel = path.relative_to(local_dir).as_posix()
            key = f"{prefix}/{rel}" if prefix else rel
            try:
                client.upload_file(str(path), bucket, key, Config=config, Callback=bar.update)
            except Exception as e:
                if hasattr(e, "response"):
                    raise _client_error(e, f"s3://{bucket}/{key}", client) from None
                if _is_botocore(e):
                    raise _unreachable(e, f"s3://{bucket}/{key}", client) from None
                raise
            uploaded.append(f"s3://{bucket}/{key}")
    log.info("%s -> %s: uploaded %d file(s)", local_dir, uri, len(uploaded))
    return uploaded


# ---- content of what is stored ----------------------------------------------------------------------------------


def list_objects(uri: str, *, client=None) -> list[dict[str, Any]]:
    """Every object under the prefix `uri` (boto3's dicts: Key, Size, ETag, LastModified); errors name the URI."""
    bucket, prefix = parse_s3_uri(uri)
    client = client or s3_client()
    return _list_objects(client, bucket, f"{prefix}/" if prefix else "", uri)


def object_sha256(bucket: str, key: str, *, client=None) -> str:
    """sha256 of one object's bytes, streamed (nothing is written to disk)."""
    import hashlib

    from botocore.exceptions import BotoCoreError, ClientError

    client = client or s3_client()
    h = hashlib.sha256()
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        for chunk in body.iter_chunks(_MiB):
            h.update(chunk)
    except ClientError as e:
        raise _client_error(e, f"s3://{bucket}/{key}", client) from None
    except BotoCoreError as e:
        raise _unreachable(e, f"s3://{bucket}/{key}", client) from None
    return h.hexdigest()


def remote_manifest(
    uri: str,
    *,
    client=None,
    objects: list[dict[str, Any]] | None = None,
    known: dict[str, dict[str, Any]] | None = None,
    exclude: tuple[str, ...] = ("lineage.json",),
) -> dict[str, dict[str, Any]]:
    """{relative key: {"sha256", "etag", "size"}} of every object under `uri` (files named in `exclude` left out).

    `known` is an earlier answer: an object whose ETag and size are unchanged keeps its hash instead of being read
    again (an overwritten object gets a new ETag). `objects` is a listing already made (list_objects)."""
    bucket, prefix = parse_s3_uri(uri)
    client = client or s3_client()
    key_prefix = f"{prefix}/" if prefix else ""
    objects = list_objects(uri, client=client) if objects is None else objects
    out: dict[str, dict[str, Any]] = {}
    for o in objects:
        if o["Key"].endswith("/"):
            continue
        rel = _relative_key(o["Key"], key_prefix, uri)
        if rel.rsplit("/", 1)[-1] in exclude:
            continue
        meta = {"etag": str(o["ETag"]).strip('"'), "size": int(o["Size"])}
        old = (known or {}).get(rel)
        if old and old.get("etag") == meta["etag"] and old.get("size") == meta["size"] and old.get("sha256"):
            out[rel] = {**meta, "sha256": old["sha256"]}
        else:
            out[rel] = {**meta, "sha256": object_sha256(bucket, o["Key"], client=client)}
    return out


def remote_sha256(uri: str, *, client=None) -> str:
    """The content hash of what is stored under `uri`: equal to `sha256_path` of a local copy."""
    files = remote_manifest(uri, client=client)
    if not files:
        raise FileNotFoundError(f"{uri}: no objects under this prefix")
    return manifest_digest({rel: m["sha256"] for rel, m in files.items()})


# ---- command line ----------------------------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m components.common.storage", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("download", help="mirror an S3 prefix into a cache directory; prints the local directory")
    p.add_argument("uri", help="s3://bucket/prefix")
    p.add_argument("cache_dir", help="local cache root; files land in <cache_dir>/<bucket>/<prefix>")
    p = sub.add_parser("upload", help="upload a directory to an S3 prefix; prints the number of files")
    p.add_argument("local_dir")
    p.add_argument("uri", help="s3://bucket/prefix")
    p = sub.add_parser("hash", help="print the content hash (sha256 manifest) of what is stored under a prefix")
    p.add_argument("uri", help="s3://bucket/prefix")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        if args.command == "download":
            print(download_prefix(args.uri, args.cache_dir, progress=not args.quiet))
        elif args.command == "upload":
            print(len(upload_dir(args.local_dir, args.uri, progress=not args.quiet)))
        elif args.command == "hash":
            print(remote_sha256(args.uri))
    except (ValueError, OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
