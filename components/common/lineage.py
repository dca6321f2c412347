"""Lineage records: where every artifact came from, in a form an auditor can check later.

Each artifact directory a step writes holds `lineage.json` (schema version 2):

    {
      "schema_version": 2,
      "artifact": "diagnosis",                 # output name
      "step": "diagnose",                      # producing step
      "sha256": "…",                           # content hash of the directory (lineage.json excluded)
      "files": {"diagnosis.json": "…", …},     # sha256 of every file: an audit names the files that changed
      "location": "minio://mlpipeline/v2/artifacts/…/diagnosis",   # where the artifact was written (see below)
      "inputs": {"model": {"ref": "s3://models/ckpt-42", "kind": "s3", "sha256": "…"},
                 "diag_set": {"ref": "minio://…/diag_set", "kind": "artifact", "sha256": "…", "step": "curate", …}},
      "params": {"k": 16, "tau": 0.5, …},     # the step's full configuration, credentials redacted
      "code_version": "medbridge 0.1.0+g1a2b3c4",
      "created_at": "2026-11-21T12:00:00+00:00",
      "summary": "one line a person reads in the report",
      "synthetic": true,                       # the one synthetic marker (see below)
      "run": {"kfp_run_id": …, "kfp_task_name": …, "kfp_pod_name": …, "image": …, "image_digest": …},
      "environment": {"python": "3.11.9", "packages": {"torch": "2.13.0", "vllm": null, …},
                      "gpu": {"type": "NVIDIA H200", "count": 1}, "gpu_hours": 0.42, "wall_seconds": 1512.0},
      "history": [ … lineage entries of every upstream artifact, oldest first (without their files) … ],
      "signature": {"alg": "hmac-sha256", "key_id": "…", "value": "…"}    # only when a signing key is set
    }

Findable locations. Under Kubeflow a step reads and writes artifacts through local mounts (/minio/…, /s3/…, /gcs/…);
the record holds the artifact's URI instead (taken from the executor input Kubeflow passes the step, or from the
mount's prefix), so an audit run anywhere can find it. An input mirrored from S3 (`components.common.storage`) is
recorded by its s3:// URI. Only a local run records local paths. A model from s3:// or the Hugging Face hub gets the
content hash of the directory the step resolved it to (a sha256 manifest, never an ETag, which depends on how it
was uploaded); for the hub also the revision (the snapshot's commit). A reference that cannot be resolved here is
recorded as given, with `"sha256": null`.

Run context. The Kubeflow run id, task name and pod come from the environment (KFP_RUN_ID, KFP_TASK_NAME,
KFP_POD_NAME; the pipeline sets them from the pod's labels, see pipelines/lineage_env.py), the image from
MEDBRIDGE_IMAGE (a digest when the reference is pinned `@sha256:`), GPU type and count from torch when the step
loaded it; GPU-hours are wall time since the step started times the GPUs the step held.

Signing. When a key is configured (MEDBRIDGE_LINEAGE_KEY from a Kubernetes Secret, which the pipeline maps into
its tasks when compiled with MEDBRIDGE_LINEAGE_SECRET, see pipelines/lineage_env.py; or a file named by
MEDBRIDGE_LINEAGE_KEY_FILE), the record carries an HMAC-SHA256 of its canonical JSON; `verify_signature` checks it.
Without a key, an audit proves that artifacts match their records; with one, also that the records are the ones the pipeline
wrote (editing a file and its recorded hash together is caught).

Synthetic data has ONE marker: `"synthetic": true` in a lineage record. The generators of synthetic inputs (the tiny
random-weight model, the synthetic MedMNIST / PMC-VQA / benchmark files) write it into the lineage.json of what they
write; every artifact whose inputs (or their history) carry it is synthetic too, through `write_lineage`. Nothing
else (file names, README texts, record fields) decides it; `is_synthetic(path)` reads it back.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from components.common.io import atomic_dest, file_manifest, manifest_digest, sha256_path, write_json
from components.common.redact import redact, redact_text
from components.common.schema import CURRENT, check, stamp

LINEAGE_FILE = "lineage.json"
KEY_ENV = "MEDBRIDGE_LINEAGE_KEY"
KEY_FILE_ENV = "MEDBRIDGE_LINEAGE_KEY_FILE"
PACKAGES = ("torch", "transformers", "trl", "peft", "vllm", "deepspeed", "kfp")
# Local mounts the Kubeflow launcher gives remote artifacts, and the URI scheme each stands for (kfp.dsl's own map).
KFP_MOUNTS = (("/gcs/", "gs://"), ("/minio/", "minio://"), ("/s3/", "s3://"))
# Fields of a record that its copies in a downstream `history` leave out (the files are in the record itself).
_NOT_IN_HISTORY = ("history", "files", "signature")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_step_started: float | None = None


def code_version() -> str:
    """Package version, plus the git commit when run from a checkout (images set MEDBRIDGE_CODE_VERSION)."""
    env = os.environ.get("MEDBRIDGE_CODE_VERSION")
    if env:
        return env
    try:
        from importlib.metadata import version

        ver = version("medbridge")
    except Exception:
        ver = "0+unknown"
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except Exception:
        sha = ""
    return f"medbridge {ver}+g{sha}" if sha else f"medbridge {ver}"


# ---- reading -------------------------------------------------------------------------------------------------------


def parse_lineage(text: str, where: str) -> dict[str, Any]:
    """A lineage record from its JSON text; ValueError naming `where` for invalid JSON, a non-object or an unknown
    schema version."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: line {e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
    check(data, "lineage", where)
    return data


def read_lineage(path: str | Path) -> dict[str, Any] | None:
    """The lineage record of an artifact directory (or of a file's directory), or None if it has none. A record that
    is not valid JSON raises ValueError naming the file."""
    path = Path(path)
    f = path / LINEAGE_FILE if path.is_dir() else path.parent / LINEAGE_FILE
    if not f.is_file():
        return None
    return parse_lineage(f.read_text(), str(f))


def is_synthetic(ref: str | Path | None) -> bool:
    """True when the artifact at `ref` (a directory, or a file inside one) has a lineage record saying synthetic.
    References without a local lineage record (hub ids, remote URIs, files outside an artifact) are not synthetic."""
    if not ref:
        return False
    p = Path(str(ref))
    if not p.exists():
        return False
    lin = read_lineage(p)
    return bool(lin and lin.get("synthetic"))


def inputs_synthetic(inputs: dict[str, str | Path | None]) -> bool:
    """True when any input is synthetic (the rule `write_lineage` applies to the artifact it records)."""
    return any(is_synthetic(ref) for ref in inputs.values())


# ---- signing -------------------------------------------------------------------------------------------------------


def signing_key(environ: dict[str, str] | None = None) -> bytes | None:
    """The HMAC key from MEDBRIDGE_LINEAGE_KEY or the file MEDBRIDGE_LINEAGE_KEY_FILE names (None: not signing)."""
    env = os.environ if environ is None else environ
    if env.get(KEY_ENV, "").strip():
        return env[KEY_ENV].strip().encode()
    path = env.get(KEY_FILE_ENV)
    if path:
        try:
            key = Path(path).read_bytes().strip()
        except OSError as e:
            raise ValueError(f"{KEY_FILE_ENV}={path}: cannot read the lineage signing key ({e.strerror})") from None
        return key or None
    return None


def key_id(key: bytes) -> str:
    """A short public name of a key (which key signed a record), from which the key cannot be recovered."""
    return hashlib.sha256(b"medbridge-lineage-key:" + key).hexdigest()[:16]


def _canonical(record: dict[str, Any]) -> bytes:
    body = {k: v for k, v in record.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False).encode()


def sign(record: dict[str, Any], key: bytes) -> dict[str, Any]:
    """`record` with a `signature` over all its other fields."""
    mac = hmac.new(key, _canonical(record), hashlib.sha256).hexdigest()
    return {**record, "signature": {"alg": "hmac-sha256", "key_id": key_id(key), "value": mac}}


def verify_signature(record: dict[str, Any], key: bytes) -> str:
    """"valid", "invalid" (the record changed after signing, or another key signed it), or "unsigned"."""
    sig = record.get("signature")
    if not isinstance(sig, dict) or not sig.get("value"):
        return "unsigned"
    if sig.get("alg") != "hmac-sha256" or sig.get("key_id") != key_id(key):
        return "invalid"
    mac = hmac.new(key, _canonical(record), hashlib.sha256).hexdigest()
    return "valid" if hmac.compare_digest(mac, str(sig["value"])) else "invalid"


# ---- where things are ----------------------------------------------------------------------------------------------


def _executor_input(argv: list[str] | None = None) -> dict[str, Any]:
    """The ExecutorInput Kubeflow passes a Python component (`--executor_input JSON` on the command line of the
    process the step runs in), or {} outside Kubeflow."""
    argv = sys.argv if argv is None else argv
    for i, arg in enumerate(argv):
        text = None
        if arg == "--executor_input" and i + 1 < len(argv):
            text = argv[i + 1]
        elif arg.startswith("--executor_input="):
            text = arg.split("=", 1)[1]
        if text:
            try:
                data = json.loads(text)
            except ValueError:
                return {}
            return data if isinstance(data, dict) else {}
    return {}


def kfp_uri_of_path(path: str) -> str | None:
    """The remote URI a Kubeflow artifact mount path stands for (/minio/b/k -> minio://b/k), else None."""
    for mount, scheme in KFP_MOUNTS:
        if path.startswith(mount):
            return scheme + path[len(mount):]
    return None


def _local_of_uri(uri: str) -> str:
    for mount, scheme in KFP_MOUNTS:
        if uri.startswith(scheme):
            return mount + uri[len(scheme):]
    return uri


def artifact_uris(executor_input: dict[str, Any] | None = None) -> dict[str, str]:
    """{local path: URI} of every input and output artifact of the Kubeflow task this process runs (or {})."""
    ex = _executor_input() if executor_input is None else executor_input
    out: dict[str, str] = {}
    for side in ("inputs", "outputs"):
        for lst in ((ex.get(side) or {}).get("artifacts") or {}).values():
            for art in (lst or {}).get("artifacts") or []:
                uri = art.get("uri") if isinstance(art, dict) else None
                if uri:
                    out[os.path.normpath(_local_of_uri(uri))] = uri
    return out


def locate(path: str | Path, uris: dict[str, str] | None = None) -> str:
    """Where an auditor finds a local path: its Kubeflow artifact URI, the s3:// URI it mirrors, or the absolute path
    itself (a local run)."""
    p = Path(path).absolute()
    key = os.path.normpath(str(p))
    uris = artifact_uris() if uris is None else uris
    if key in uris:
        return uris[key]
    remote = kfp_uri_of_path(key)
    if remote:
        return remote
    from components.common.storage import mirrored_uri

    return mirrored_uri(p) or key


def _hub_snapshot(repo_id: str) -> tuple[Path, str] | None:
    """(snapshot directory, revision) of a hub model in the local Hugging Face cache, or None when not cached."""
    try:
        from huggingface_hub import snapshot_download

        snap = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:
        return None
    return (snap, snap.name) if snap.is_dir() else None


def _record_copy(lin: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in lin.items() if k not in _NOT_IN_HISTORY}


def _input_entry(ref: str | Path, uris: dict[str, str]) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    """(entry for `inputs`, upstream history, synthetic flag) for one input reference."""
    from components.common.storage import mirror_of

    ref_s = str(ref)
    if ref_s.startswith("s3://"):
        local = mirror_of(ref_s)
        if local is None:
            return {"ref": ref_s, "kind": "s3", "sha256": None, "note": "not resolved in this step"}, [], False
        entry, history, syn = _input_entry(local, uris)
        return {**entry, "ref": ref_s, "kind": "s3"}, history, syn
    p = Path(ref_s)
    if p.exists():
        where = locate(p, uris)
        lin = read_lineage(p) if p.is_dir() else None
        if lin is not None:
            entry = {"ref": where, "kind": "artifact", "sha256": lin.get("sha256"), "step": lin.get("step"),
                     "artifact": lin.get("artifact")}
            return entry, [*lin.get("history", []), _record_copy(lin)], bool(lin.get("synthetic"))
        return {"ref": where, "kind": "file" if p.is_file() else "directory", "sha256": sha256_path(p)}, [], False
    if _HUB_ID.match(ref_s) and not ref_s.startswith(("/", ".")):
        snap = _hub_snapshot(ref_s)
        if snap is None:
            return {"ref": ref_s, "kind": "hub", "sha256": None, "revision": None,
                    "note": "not in the local Hugging Face cache"}, [], False
        return {"ref": ref_s, "kind": "hub", "sha256": sha256_path(snap[0]), "revision": snap[1]}, [], False
    return {"ref": ref_s, "kind": "unresolved", "sha256": None}, [], False


# ---- the run and the machine ---------------------------------------------------------------------------------------


def mark_step_start(when: float | None = None) -> None:
    """Record when the step began (the launcher calls this), for the record's wall time and GPU-hours."""
    global _step_started
    _step_started = time.time() if when is None else when


def _process_start() -> float:
    try:
        stat = Path("/proc/self/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except Exception:
        return time.time()


def run_context(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Kubeflow run id, task name and pod, and the image the step runs in (None where unknown, e.g. a local run)."""
    env = os.environ if environ is None else environ

    def get(*names: str) -> str | None:
        return next((env[n] for n in names if env.get(n)), None)

    image = get("MEDBRIDGE_IMAGE")
    digest = get("MEDBRIDGE_IMAGE_DIGEST")
    if not digest and image and "@sha256:" in image:
        digest = "sha256:" + image.split("@sha256:", 1)[1]
    return {
        "kfp_run_id": get("KFP_RUN_ID", "MEDBRIDGE_KFP_RUN_ID"),
        "kfp_task_name": get("KFP_TASK_NAME", "MEDBRIDGE_KFP_TASK_NAME"),
        "kfp_pod_name": get("KFP_POD_NAME"),
        "image": image,
        "image_digest": digest,
    }


def package_versions() -> dict[str, str | None]:
    """Installed versions of the libraries a result depends on (None: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _gpus() -> tuple[str | None, int]:
    torch = sys.modules.get("torch")  # never import torch just to ask: a CPU step did not use a GPU
    try:
        if torch is not None and torch.cuda.is_available():
            return torch.cuda.get_device_name(0), int(torch.cuda.device_count())
    except Exception:
        pass
    return None, 0


def environment() -> dict[str, Any]:
    """Python, library versions, GPU type and count, wall time since the step began and the GPU-hours it held."""
    started = _step_started if _step_started is not None else _process_start()
    wall = max(0.0, time.time() - started)
    gpu_type, gpu_count = _gpus()
    return {
        "python": platform.python_version(),
        "packages": package_versions(),
        "gpu": {"type": gpu_type, "count": gpu_count},
        "wall_seconds": round(wall, 1),
        "gpu_hours": round(wall / 3600 * gpu_count, 4),
    }


# ---- writing -------------------------------------------------------------------------------------------------------


def write_lineage(
    out_dir: str | Path,
    *,
    step: str,
    artifact: str,
    inputs: dict[str, str | Path] | None = None,
    params: dict[str, Any] | None = None,
    summary: str = "",
    synthetic: bool = False,
) -> dict[str, Any]:
    """Hash `out_dir` and write its lineage record into it. Call last, once the artifact is complete (inside an
    `atomic_dir`, the record names the directory it will be renamed to).

    The record is synthetic when any input is; `synthetic=True` is for the generators of synthetic data only."""
    out_dir = Path(out_dir)
    uris = artifact_uris()
    entries: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    any_synthetic = False
    seen: set[tuple[str | None, str | None]] = set()
    for name, ref in (inputs or {}).items():
        entry, upstream, syn = _input_entry(ref, uris)
        entries[name] = {k: redact_text(v) if isinstance(v, str) else v for k, v in entry.items()}
        any_synthetic |= syn
        for h in upstream:
            key = (h.get("sha256"), h.get("artifact"))
            if key not in seen:
                seen.add(key)
                history.append(_record_copy(h))
    files = file_manifest(out_dir)
    record = stamp(
        {
            "artifact": artifact,
            "step": step,
            "sha256": manifest_digest(files),
            "files": files,
            "location": redact_text(locate(atomic_dest(out_dir), uris)),
            "inputs": entries,
            "params": redact(params or {}),
            "code_version": code_version(),
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "summary": redact_text(summary),
            "synthetic": bool(synthetic) or any_synthetic,
            "run": run_context(),
            "environment": environment(),
            "history": history,
        },
        "lineage",
    )
    record = json.loads(json.dumps(record, default=str))  # what is signed is exactly what is read back
    key = signing_key()
    if key:
        record = sign(record, key)
    write_json(Path(out_dir) / LINEAGE_FILE, record)
    return record


__all__ = [
    "CURRENT",
    "LINEAGE_FILE",
    "code_version",
    "environment",
    "is_synthetic",
    "inputs_synthetic",
    "locate",
    "mark_step_start",
    "parse_lineage",
    "read_lineage",
    "run_context",
    "sign",
    "signing_key",
    "verify_signature",
    "write_lineage",
]
