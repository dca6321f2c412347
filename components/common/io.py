"""Crash-safe file output and content hashing.

Every file or directory a MedBridge step writes appears whole or not at all: it is written under a temporary
name beside its destination and renamed into place, so an interrupted run never leaves a half-written artifact
and never destroys the previous one.

What a step writes is readable by the pipeline's other pods whatever user they run as (a cache-seeding job run as
root, OpenShift's arbitrary uids): files get group/other read, directories group/other read+execute, however they
were created (libraries that write through `tempfile`, whose files are 0600). Under the cache root
(`$MEDBRIDGE_CACHE`, the shared cache volume) they also get group write, so a pod of another uid in the same group
(gid 0 on OpenShift) can update the cache. See `share`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


_READ = 0o044  # group + other read
_DIR_READ = 0o055  # group + other read + execute (list and enter)
_GROUP_WRITE = 0o020


def _under_cache(path: Path) -> bool:
    root = os.environ.get("MEDBRIDGE_CACHE")
    if not root:
        return False
    try:
        path.resolve().relative_to(Path(root).resolve())
        return True
    except ValueError:
        return False


def share(path: str | Path, group_write: bool | None = None) -> Path:
    """Give `path` (and, for a directory, everything under it) group/other read (+ execute on directories), and
    group write when `group_write` (default: when it lies under $MEDBRIDGE_CACHE). Never removes a permission."""
    path = Path(path)
    extra = _GROUP_WRITE if (_under_cache(path) if group_write is None else group_write) else 0
    items = [path, *path.rglob("*")] if path.is_dir() else [path]
    for p in items:
        if p.is_symlink():
            continue
        mode = p.stat().st_mode & 0o7777
        want = mode | (_DIR_READ if p.is_dir() else _READ) | extra
        if want != mode:
            os.chmod(p, want)
    return path


@contextlib.contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory; on success it replaces `dest`, on error it is removed."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    share(tmp, group_write=_under_cache(dest))  # whatever wrote the files, other pods can read them
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` for a writer that needs a file name (e.g. a streaming download);
    on success it is renamed onto `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        share(tmp, group_write=_under_cache(path))  # mkstemp's 0600 would hide the file from other users
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same directory and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        share(tmp, group_write=_under_cache(path))  # as atomic_file: readable like any file a step writes
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSON-lines file; a bad line raises an error naming the file and the line number."""
    path = Path(path)
    rows = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {lineno}: not valid JSON ({e.msg})") from None
    return rows


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_digest(files: dict[str, str]) -> str:
    """The content hash of a directory from its manifest {relative posix path: file sha256}: sha256 over each path and
    file hash, in path order (by path components). The one directory hash MedBridge uses (`sha256_path`, lineage,
    the checkpoint registry on S3), so a hash computed from a local copy equals one computed from the objects."""
    h = hashlib.sha256()
    for rel in sorted(files, key=lambda r: r.split("/")):
        h.update(rel.encode() + b"\0")
        h.update(files[rel].encode() + b"\n")
    return h.hexdigest()


def file_manifest(path: str | Path, exclude: tuple[str, ...] = ("lineage.json",)) -> dict[str, str]:
    """{relative posix path: sha256} of every file under directory `path`, leaving out files named in `exclude`
    (at any depth)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such directory to hash")
    return {
        p.relative_to(path).as_posix(): sha256_file(p)
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name not in exclude
    }


def atomic_dest(path: str | Path) -> Path:
    """Where a temporary directory of `atomic_dir` will land (`path` itself for any other directory)."""
    path = Path(path)
    name = path.name
    if name.startswith(".") and name.endswith(".tmp") and name.count(".") >= 3:
        return path.with_name(name[1:].rsplit(".", 2)[0])
    return path


def sha256_path(path: str | Path, exclude: tuple[str, ...] = ("lineage.json",)) -> str:
    """Content hash of a file, or of a directory tree (relative paths + file hashes, sorted).

    Files named in `exclude` (at any depth) are left out, so that a directory's lineage record can hold the
    directory's own hash.
    """
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or directory to hash")
    return manifest_digest(file_manifest(path, exclude))
