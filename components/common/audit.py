"""Audit lineage: recompute every artifact's content hash, walk its history, and say per artifact whether it is what
the pipeline recorded.

    report = audit("runs/kfp/medbridge-2026…")              # a run directory, an artifact directory
    report = audit("s3://mlpipeline/v2/artifacts/medbridge/<run-id>", key=b"…")   # or what a run stored on S3
    report.tampered  -> [rows]; report.to_dict() -> JSON (schema "audit")

Each row is one artifact and one status:
- verified: its files hash to what its lineage.json (and every downstream record that consumed it) recorded;
- tampered: they do not (the row names the files that changed, were added or removed), or the record contradicts
  itself (its sha256 is not the hash of its own file list: the hash was edited), or, with a key, its signature fails;
- missing: a downstream record names it, but it is not where the record says, nor anywhere in the audited tree;
- unverifiable: nothing to check it against (no lineage.json, a lineage.json that is not valid JSON or of an
  unknown schema, a reference recorded without a hash, a hub model not in the local cache).

The artifacts under the target are audited first (targets), then every upstream artifact their records name
(inputs and history), found by content hash in the audited tree or at its recorded location (a local path, an
s3:// URI, a Kubeflow minio:// URI read through the same S3 endpoint, a cached hub snapshot).

What it proves. Without a signing key: every artifact still matches its record, and every record matches what its
consumers recorded; someone who edits an artifact AND its recorded hashes in every downstream record goes
undetected. With the key the records were signed with (MEDBRIDGE_LINEAGE_KEY): the records themselves are the
ones the pipeline wrote, so such an edit is caught at the first record touched.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from components.common.io import file_manifest, manifest_digest, sha256_path
from components.common.lineage import LINEAGE_FILE, _hub_snapshot, parse_lineage, verify_signature
from components.common.schema import stamp

STATUSES = ("verified", "tampered", "missing", "unverifiable")


@dataclasses.dataclass
class Row:
    artifact: str  # "step/artifact" as recorded, or the directory's name
    location: str  # where it was found (or recorded, when missing)
    status: str  # one of STATUSES
    detail: str
    role: str = "target"  # "target" (under the audited path) or "upstream" (named by a record)
    sha256: str | None = None  # the recorded hash
    changed: list[str] = dataclasses.field(default_factory=list)  # files changed / added / removed
    signature: str = "unchecked"  # valid | invalid | unsigned | unchecked (no key given)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class AuditReport:
    target: str
    rows: list[Row]
    key_used: bool

    @property
    def tampered(self) -> list[Row]:
        return [r for r in self.rows if r.status == "tampered"]

    def counts(self) -> dict[str, int]:
        return {s: sum(r.status == s for r in self.rows) for s in STATUSES}

    def to_dict(self) -> dict[str, Any]:
        return stamp(
            {"target": self.target, "key_used": self.key_used, "counts": self.counts(),
             "rows": [r.to_dict() for r in self.rows]},
            "audit",
        )


# ---- where artifacts are: a local tree or an S3 prefix ------------------------------------------------------------


def _is_remote(ref: str) -> bool:
    return ref.startswith(("s3://", "minio://"))


def _s3_uri(ref: str) -> str:
    """minio://bucket/key (Kubeflow's own object store) is read as s3://bucket/key through the S3 endpoint."""
    return "s3://" + ref[len("minio://"):] if ref.startswith("minio://") else ref


class _Local:
    def artifacts(self, root: Path) -> list[str]:
        found = sorted({str(p.parent) for p in root.rglob(LINEAGE_FILE) if p.is_file() and not _hidden(p, root)})
        return found

    def read_record(self, where: str) -> str | None:
        f = Path(where) / LINEAGE_FILE
        return f.read_text() if f.is_file() else None

    def manifest(self, where: str) -> dict[str, str]:
        return file_manifest(where)


def _hidden(p: Path, root: Path) -> bool:
    """Inside a temporary or backup folder of `atomic_dir` (.name.xxxx.tmp / .name.old-pid): not an artifact."""
    return any(part.startswith(".") for part in p.relative_to(root).parts[:-1])


class _S3:
    def __init__(self, client=None):
        from components.common.storage import s3_client

        self.client = client or s3_client()

    def artifacts(self, uri: str) -> list[str]:
        from components.common.storage import list_objects, parse_s3_uri

        bucket, _ = parse_s3_uri(uri)
        keys = [o["Key"] for o in list_objects(uri, client=self.client)]
        return sorted(f"s3://{bucket}/{k[: -len(LINEAGE_FILE) - 1]}" for k in keys if k.endswith("/" + LINEAGE_FILE))

    def read_record(self, where: str) -> str | None:
        from botocore.exceptions import ClientError

        from components.common.storage import parse_s3_uri

        bucket, prefix = parse_s3_uri(where)
        try:
            body = self.client.get_object(Bucket=bucket, Key=f"{prefix}/{LINEAGE_FILE}")["Body"].read()
        except ClientError:
            return None
        return body.decode("utf-8", errors="replace")

    def manifest(self, where: str) -> dict[str, str]:
        from components.common.storage import remote_manifest

        files = remote_manifest(where, client=self.client)
        if not files:
            raise FileNotFoundError(f"{where}: no objects under this prefix")
        return {rel: m["sha256"] for rel, m in files.items()}


# ---- checking one artifact ----------------------------------------------------------------------------------------


def _diff(recorded: dict[str, str], current: dict[str, str]) -> list[str]:
    changed = [f"{r} (changed)" for r in sorted(recorded) if r in current and current[r] != recorded[r]]
    removed = [f"{r} (removed)" for r in sorted(recorded) if r not in current]
    added = [f"{r} (added)" for r in sorted(current) if r not in recorded]
    return changed + removed + added


def _name(rec: dict[str, Any] | None, where: str) -> str:
    if rec and rec.get("step") and rec.get("artifact"):
        return f"{rec['step']}/{rec['artifact']}"
    return where.rstrip("/").rsplit("/", 1)[-1]


def check_record(rec: dict[str, Any], current: dict[str, str], where: str, key: bytes | None) -> Row:
    """One artifact against its own lineage record (`current`: its files' hashes now)."""
    row = Row(artifact=_name(rec, where), location=where, status="verified", detail="", sha256=rec.get("sha256"))
    notes = []
    if key is not None:
        row.signature = verify_signature(rec, key)
        if row.signature == "unsigned":
            notes.append("record not signed")
    elif isinstance(rec.get("signature"), dict):
        notes.append("signed; no key given, signature not checked")
    recorded_files = rec.get("files")
    digest_now = manifest_digest(current)
    if not rec.get("sha256"):
        row.status, row.detail = "unverifiable", "lineage.json records no sha256"
        return row
    if isinstance(recorded_files, dict):
        row.changed = _diff(recorded_files, current)
        if row.changed:
            row.status = "tampered"
            notes.insert(0, f"{len(row.changed)} file(s) differ from lineage.json: {', '.join(row.changed)}")
        elif manifest_digest(recorded_files) != rec["sha256"]:
            row.status = "tampered"
            notes.insert(0, "lineage.json's sha256 is not the hash of its own file list (the recorded hash was edited)")
    elif digest_now != rec["sha256"]:
        row.status = "tampered"
        notes.insert(0, "content differs from the recorded sha256 (a schema-1 record lists no files to name)")
    if row.signature == "invalid":
        row.status = "tampered"
        notes.insert(0, "signature invalid: lineage.json was edited after it was signed (or another key signed it)")
    if row.status == "verified":
        notes.insert(0, f"{len(current)} file(s) match lineage.json")
    row.detail = "; ".join(notes)
    return row


# ---- the audit ----------------------------------------------------------------------------------------------------


def _upstream_refs(records: list[dict[str, Any]], raw_inputs: bool = True) -> list[dict[str, Any]]:
    """Every upstream reference the records name: {sha256, artifact, locations, kind, revision, consumer}."""
    refs: dict[tuple, dict[str, Any]] = {}

    def add(sha, name, location, kind, consumer, revision=None):
        k = (sha, name if sha else location)
        ref = refs.setdefault(k, {"sha256": sha, "artifact": name, "locations": [], "kind": kind,
                                  "revision": revision, "consumer": consumer})
        if location and location not in ref["locations"]:
            ref["locations"].append(location)

    for rec in records:
        consumer = _name(rec, rec.get("location") or "?")
        for name, e in (rec.get("inputs") or {}).items():
            if not isinstance(e, dict) or (not raw_inputs and (e.get("kind") or "artifact") != "artifact"):
                continue
            label = f"{e['step']}/{e.get('artifact')}" if e.get("step") else f"input {name}"
            add(e.get("sha256"), label, e.get("ref"), e.get("kind") or "artifact", consumer, e.get("revision"))
        for h in rec.get("history") or []:
            if isinstance(h, dict) and h.get("sha256"):
                add(h["sha256"], _name(h, "?"), h.get("location"), "artifact", consumer)
    # A schema-1 history entry has no location: its consumers' inputs name it by hash.
    by_sha = {r["sha256"]: r for r in refs.values() if r["sha256"]}
    for r in refs.values():
        if r["sha256"] and not r["locations"] and r["sha256"] in by_sha:
            r["locations"] = by_sha[r["sha256"]]["locations"]
    return list(refs.values())


def _content(location: str, s3: _S3 | None) -> tuple[str | None, dict[str, str] | None, str]:
    """(content hash, file manifest or None, note) of what is at `location` now; hash None when nothing is there."""
    if _is_remote(location):
        if s3 is None:
            return None, None, "no S3 client"
        uri = _s3_uri(location)
        try:
            files = s3.manifest(uri)
        except FileNotFoundError:
            return None, None, f"nothing stored at {location}"
        return manifest_digest(files), files, ""
    p = Path(location)
    if p.is_dir():
        files = file_manifest(p)
        return manifest_digest(files), files, ""
    if p.is_file():
        return sha256_path(p), None, ""
    return None, None, f"{location} does not exist"


def _check_upstream(ref: dict[str, Any], found: dict[str, Row], s3: _S3 | None) -> Row:
    sha = ref["sha256"]
    row = Row(artifact=ref["artifact"], location=(ref["locations"] or ["?"])[0], status="missing", detail="",
              role="upstream", sha256=sha)
    if not sha:
        row.status = "unverifiable"
        row.detail = f"recorded by {ref['consumer']} without a content hash ({ref['kind']} reference)"
        return row
    if sha in found:  # the same content is under the audited target, checked there
        other = found[sha]
        row.location, row.status, row.changed, row.signature = other.location, other.status, other.changed, other.signature
        row.detail = f"found under the audited target; {other.detail}"
        return row
    notes = []
    for location in ref["locations"]:
        if ref["kind"] == "hub":
            snap = _hub_snapshot(location) if not ref.get("revision") else _hub_revision(location, ref["revision"])
            if snap is None:
                row.status = "unverifiable"
                row.detail = f"hub model {location} (revision {ref.get('revision')}) is not in the local Hugging Face cache"
                return row
            location = str(snap)
        try:
            digest, files, note = _content(location, s3)
        except (OSError, ValueError, RuntimeError) as e:
            notes.append(str(e))
            continue
        if digest is None:
            notes.append(note)
            continue
        row.location = location
        if digest == sha:
            row.status, row.detail = "verified", f"content matches what {ref['consumer']} recorded"
            return row
        row.status = "tampered"
        own = _own_files(location, s3)
        if own is not None and files is not None:
            row.changed = _diff(own, files) or ["(files match its own lineage.json, which was edited to match)"]
        row.detail = f"content differs from what {ref['consumer']} recorded ({sha[:12]}…, now {digest[:12]}…)"
        if row.changed:
            row.detail += ": " + ", ".join(row.changed)
        return row
    row.detail = "; ".join(n for n in notes if n) or "no location recorded"
    return row


def _hub_revision(repo_id: str, revision: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except Exception:
        return None


def _own_files(location: str, s3: _S3 | None) -> dict[str, str] | None:
    try:
        text = s3.read_record(_s3_uri(location)) if _is_remote(location) and s3 else _Local().read_record(location)
        rec = parse_lineage(text, location) if text else None
    except (OSError, ValueError):
        return None
    files = rec.get("files") if rec else None
    return files if isinstance(files, dict) else None


def audit(target: str | Path, *, key: bytes | None = None, client=None, upstream: bool = True) -> AuditReport:
    """Audit every artifact under `target` (a directory or an s3:// prefix) and, with `upstream`, every artifact
    their records name. Raises FileNotFoundError (one line) when the target holds no lineage.json at all."""
    target_s = str(target)
    if _is_remote(target_s):
        s3 = _S3(client)
        located = [(s3, w) for w in s3.artifacts(_s3_uri(target_s).rstrip("/"))]
    else:
        s3 = None
        root = Path(target_s)
        if not root.exists():
            raise FileNotFoundError(f"{target_s}: no such file or directory to audit")
        if root.is_file():
            raise ValueError(f"{target_s}: a file; audit an artifact directory, a run directory or an s3:// prefix")
        located = [(_Local(), w) for w in _Local().artifacts(root)]
    if not located:
        raise FileNotFoundError(
            f"{target_s}: no {LINEAGE_FILE} under it; not a MedBridge artifact, run directory or run prefix"
        )
    return _audit(target_s, located, key, client, s3, upstream)


def audit_dirs(dirs: list[str | Path]) -> tuple[list[Row], bool, str]:
    """(rows, whether a signing key was used, error) for local artifact directories (a run report's inputs);
    never raises: what cannot be audited is said in the error text."""
    from components.common.lineage import signing_key

    try:
        key = signing_key()
        located, seen = [], set()
        for d in dirs:
            p = Path(d)
            if p.is_dir():
                for w in _Local().artifacts(p):
                    if w not in seen:
                        seen.add(w)
                        located.append((_Local(), w))
        if not located:
            return [], key is not None, "no input holds a lineage.json"
        # Raw data roots and models outside MedBridge are left to `medbridge audit`: hashing them here would cost
        # the report minutes; every MedBridge artifact upstream is checked.
        report = _audit(", ".join(map(str, dirs)), located, key, None, None, True, raw_inputs=False)
        return report.rows, key is not None, ""
    except Exception as e:  # the report must render whatever happens here
        return [], False, f"audit not available: {type(e).__name__}: {e}"


def _audit(target_s: str, located: list[tuple[Any, str]], key: bytes | None, client, s3, upstream: bool,
           raw_inputs: bool = True) -> AuditReport:
    rows: list[Row] = []
    records: list[dict[str, Any]] = []
    found: dict[str, Row] = {}  # recorded sha256 -> target row
    digests: dict[str, str] = {}  # target location -> content hash now
    for src, where in located:
        text = src.read_record(where)
        try:
            rec = parse_lineage(text or "", f"{where}/{LINEAGE_FILE}")
        except ValueError as e:
            rows.append(Row(artifact=_name(None, where), location=where, status="unverifiable", detail=str(e)))
            continue
        try:
            current = src.manifest(where)
        except (OSError, ValueError) as e:
            rows.append(Row(artifact=_name(rec, where), location=where, status="missing", detail=str(e)))
            continue
        row = check_record(rec, current, where, key)
        rows.append(row)
        records.append(rec)
        digests[where] = manifest_digest(current)
        if rec.get("sha256"):
            found[rec["sha256"]] = row
    if upstream:
        refs = _upstream_refs(records, raw_inputs)
        if s3 is None and any(_is_remote(loc) for r in refs for loc in r["locations"]):
            try:
                s3 = _S3(client)
            except Exception:  # no boto3 / no credentials: remote upstreams stay unverified, with a reason
                s3 = None
        targets = [r for r in rows if r.role == "target"]
        for ref in refs:
            tgt = _target_at(ref["locations"], targets) or found.get(ref["sha256"])
            if tgt is None:
                rows.append(_check_upstream(ref, found, s3))
            elif ref["sha256"] and digests.get(tgt.location) not in (None, ref["sha256"]) and tgt.status != "tampered":
                # It passes its own check, but not its consumer's: the artifact was edited together with its
                # lineage.json (file list and hash).
                tgt.status = "tampered"
                tgt.detail = (
                    f"{ref['consumer']} recorded it as {ref['sha256'][:12]}…, it now hashes to "
                    f"{digests[tgt.location][:12]}… (its own lineage.json was edited to match); " + tgt.detail
                )
    return AuditReport(target=target_s, rows=rows, key_used=key is not None)


def _target_at(locations: list[str], targets: list[Row]) -> Row | None:
    """The audited artifact a recorded location names: the same path or URI, or, for a run directory that was moved
    or copied, the same last three path components (run / task / output)."""
    for loc in locations:
        norm = os.path.normpath(_s3_uri(loc)) if loc else ""
        for t in targets:
            if norm and os.path.normpath(_s3_uri(t.location)) == norm:
                return t
        tail = norm.split("/")[-3:]
        if len(tail) == 3:
            for t in targets:
                if os.path.normpath(_s3_uri(t.location)).split("/")[-3:] == tail:
                    return t
    return None


def format_rows(report: AuditReport) -> str:
    """The report as aligned text lines, one per artifact, then a summary line."""
    from components.common.markdown import md_table

    body = md_table(
        ["status", "artifact", "role", "where", "detail"],
        [[r.status.upper() if r.status == "tampered" else r.status, r.artifact, r.role, r.location, r.detail]
         for r in report.rows],
    )
    counts = ", ".join(f"{n} {s}" for s, n in report.counts().items() if n)
    key = "records checked against the signing key" if report.key_used else "no signing key: records not authenticated"
    return f"{body}\n{counts} ({key})"


def audit_json(report: AuditReport) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=True)
