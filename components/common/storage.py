"""S3 / MinIO storage: parse s3:// URIs, mirror a prefix into the local cache, upload a directory, find new checkpoints.

    python -m components.common.storage download s3://models/qwen2.5-vl-7b /cache/models
    python -m components.common.storage upload runs/sft-42/model s3://models/medbridge/checkpoints/sft-42
    python -m components.common.storage checkpoints s3://models/medbridge/checkpoints --state s3://medbridge/state/submitted
    python -m components.common.storage mark s3://models/medbridge/checkpoints/sft-42 --state s3://medbridge/state/submitted

Endpoint: MEDBRIDGE_S3_ENDPOINT if set, else boto3's own AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (MinIO, SeaweedFS,
Ceph RGW; path-style addressing is used with a custom endpoint), else AWS. Credentials come from boto3's usual chain
(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, which the cluster injects from the `medbridge-s3` Secret).

`download_prefix` mirrors s3://bucket/prefix into <cache_dir>/<bucket>/<prefix> and records each file's size and
ETag in a manifest beside that directory (`.<name>.s3-manifest.json`, outside the mirrored tree so it never becomes
part of a model directory or its hash). A second call fetches only what changed on the server and removes files
the server no longer has; every file is written under a temporary name and renamed into place, so an interrupted
download never leaves a half-written file where a model loader would open it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from components.common.io import atomic_file, write_json

log = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".s3-manifest.json"
# Uploaded last, so that a reader polling for them (the re-diagnosis CronJob polls for config.json) never sees a
# checkpoint whose weights are still on their way.
UPLOAD_LAST = ("config.json", "lineage.json")
CACHE_ENV = "MEDBRIDGE_CACHE"
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


def _list_objects(client, bucket: str, key_prefix: str, uri: str) -> list[dict[str, Any]]:
    from botocore.exceptions import ClientError

    objects: list[dict[str, Any]] = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix):
            objects.extend(page.get("Contents", []))
    except ClientError as e:
        raise _client_error(e, uri, client) from None
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
                        raise
                manifest[rel] = remote[rel]
    finally:
        # Written even when interrupted: the next call then fetches only what is missing.
        write_json(manifest_path, {"uri": uri, "endpoint": endpoint, "files": manifest})
    log.info(
        "%s -> %s: fetched %d file(s) (%d bytes), reused %d, removed %d",
        uri, local, len(todo), nbytes, len(fresh), len(stale),
    )
    return local


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
                raise
            uploaded.append(f"s3://{bucket}/{key}")
    log.info("%s -> %s: uploaded %d file(s)", local_dir, uri, len(uploaded))
    return uploaded


# ---- checkpoints: what the re-diagnosis CronJob (k8s/base/cronjob-rediagnose.yaml) submits -----------------------


def list_checkpoints(uri: str, *, client=None, ready_file: str = "config.json") -> list[str]:
    """Checkpoint URIs directly under `uri` (sub-prefixes holding `ready_file`), oldest `ready_file` first."""
    bucket, prefix = parse_s3_uri(uri)
    client = client or s3_client()
    key_prefix = f"{prefix}/" if prefix else ""
    found = []
    for obj in _list_objects(client, bucket, key_prefix, uri):
        parts = obj["Key"][len(key_prefix) :].split("/")
        if len(parts) == 2 and parts[0] and parts[1] == ready_file:
            found.append((obj["LastModified"], parts[0]))
    return [f"s3://{bucket}/{key_prefix}{name}" for _, name in sorted(found)]


def _marker_key(checkpoint_uri: str, state_uri: str) -> tuple[str, str]:
    bucket, prefix = parse_s3_uri(checkpoint_uri)
    state_bucket, state_prefix = parse_s3_uri(state_uri)
    name = f"{bucket}/{prefix}.json" if prefix else f"{bucket}.json"
    return state_bucket, f"{state_prefix}/{name}" if state_prefix else name


def pending_checkpoints(
    checkpoints_uri: str, state_uri: str, *, client=None, ready_file: str = "config.json", limit: int = 0
) -> list[str]:
    """Checkpoints under `checkpoints_uri` not yet marked under `state_uri`, oldest first (at most `limit`; 0 = all)."""
    client = client or s3_client()
    state_bucket, state_prefix = parse_s3_uri(state_uri)
    done = {o["Key"] for o in _list_objects(client, state_bucket, f"{state_prefix}/" if state_prefix else "", state_uri)}
    pending = [
        c
        for c in list_checkpoints(checkpoints_uri, client=client, ready_file=ready_file)
        if _marker_key(c, state_uri)[1] not in done
    ]
    return pending[:limit] if limit > 0 else pending


def mark_submitted(checkpoint_uri: str, state_uri: str, *, client=None, note: str = "") -> str:
    """Record under `state_uri` that `checkpoint_uri` was submitted; returns the marker's URI."""
    from botocore.exceptions import ClientError

    client = client or s3_client()
    bucket, key = _marker_key(checkpoint_uri, state_uri)
    body = {"checkpoint": checkpoint_uri, "submitted_at": _dt.datetime.now(_dt.timezone.utc).isoformat(), "note": note}
    try:
        client.put_object(Bucket=bucket, Key=key, Body=json.dumps(body).encode(), ContentType="application/json")
    except ClientError as e:
        raise _client_error(e, f"s3://{bucket}/{key}", client) from None
    return f"s3://{bucket}/{key}"


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
    for name, text in (("checkpoints", "print checkpoints not yet submitted, oldest first, one per line"),
                       ("mark", "record that a checkpoint was submitted")):
        p = sub.add_parser(name, help=text)
        p.add_argument("uri", help="checkpoints prefix" if name == "checkpoints" else "the checkpoint's URI")
        p.add_argument("--state", required=True, help="s3:// prefix where submission markers are kept")
    sub.choices["checkpoints"].add_argument(
        "--ready-file", default="config.json", help="a checkpoint counts once this file exists in it"
    )
    sub.choices["checkpoints"].add_argument("--limit", type=int, default=0, help="print at most this many (0 = all)")
    sub.choices["mark"].add_argument("--note", default="", help="free text stored in the marker (e.g. the run id)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        if args.command == "download":
            print(download_prefix(args.uri, args.cache_dir, progress=not args.quiet))
        elif args.command == "upload":
            print(len(upload_dir(args.local_dir, args.uri, progress=not args.quiet)))
        elif args.command == "checkpoints":
            for uri in pending_checkpoints(args.uri, args.state, ready_file=args.ready_file, limit=args.limit):
                print(uri)
        elif args.command == "mark":
            print(mark_submitted(args.uri, args.state, note=args.note))
    except (ValueError, OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
