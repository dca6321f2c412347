"""Lineage records: where every artifact came from.

Each artifact directory a step writes holds `lineage.json`:

    {
      "artifact": "diagnosis",                 # output name
      "sha256": "…",                           # content hash of the directory (lineage.json excluded)
      "step": "diagnose",                      # producing step
      "inputs": {"model": {"sha256": "…", "step": "sft", "ref": "/path/or/uri"}, …},
      "params": {"k": 16, "tau": 0.5, …},     # the step's full configuration
      "code_version": "medbridge 0.1.0+g1a2b3c4",
      "created_at": "2026-11-21T12:00:00+00:00",
      "summary": "one line a person reads in the report",
      "synthetic": true,                       # the one synthetic marker (see below)
      "history": [ … lineage entries of every upstream artifact, oldest first … ]
    }

`history` makes any artifact answer an audit on its own: the chain of steps, hashes and parameters that led to it.

Synthetic data has ONE marker: `"synthetic": true` in a lineage record. The generators of synthetic inputs (the tiny
random-weight model, the synthetic MedMNIST / PMC-VQA / benchmark files) write it into the lineage.json of what they
write; every artifact whose inputs (or their history) carry it is synthetic too, through `write_lineage`. Nothing
else (file names, README texts, record fields) decides it; `is_synthetic(path)` reads it back.
"""

from __future__ import annotations

import datetime as _dt
import os
import subprocess
from pathlib import Path
from typing import Any

from components.common.io import sha256_path, write_json

LINEAGE_FILE = "lineage.json"


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


def read_lineage(path: str | Path) -> dict[str, Any] | None:
    """The lineage record of an artifact directory (or of a file's directory), or None if it has none."""
    import json

    path = Path(path)
    f = path / LINEAGE_FILE if path.is_dir() else path.parent / LINEAGE_FILE
    if not f.is_file():
        return None
    return json.loads(f.read_text())


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


def _input_entry(ref: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    """(entry for `inputs`, upstream history, synthetic flag) for one input reference."""
    ref_s = str(ref)
    p = Path(ref_s)
    if p.exists():
        lin = read_lineage(p)
        if lin is not None and p.is_dir():
            entry = {"sha256": lin["sha256"], "step": lin["step"], "artifact": lin.get("artifact"), "ref": ref_s}
            own = {k: v for k, v in lin.items() if k != "history"}
            return entry, [*lin.get("history", []), own], bool(lin.get("synthetic"))
        return {"sha256": sha256_path(p), "step": None, "ref": ref_s}, [], is_synthetic(p)
    return {"sha256": None, "step": None, "ref": ref_s}, [], False  # hub id or remote URI, recorded as given


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
    """Hash `out_dir` and write its lineage record into it. Call last, once the artifact is complete.

    The record is synthetic when any input is; `synthetic=True` is for the generators of synthetic data only."""
    out_dir = Path(out_dir)
    entries: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    any_synthetic = False
    seen: set[tuple[str | None, str | None]] = set()
    for name, ref in (inputs or {}).items():
        entry, upstream, syn = _input_entry(ref)
        entries[name] = entry
        any_synthetic |= syn
        for h in upstream:
            key = (h.get("sha256"), h.get("artifact"))
            if key not in seen:
                seen.add(key)
                history.append(h)
    record = {
        "artifact": artifact,
        "sha256": sha256_path(out_dir),
        "step": step,
        "inputs": entries,
        "params": params or {},
        "code_version": code_version(),
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "summary": summary,
        "synthetic": bool(synthetic) or any_synthetic,
        "history": history,
    }
    write_json(out_dir / LINEAGE_FILE, record)
    return record
