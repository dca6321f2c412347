"""Reading the JSON documents steps hand each other (diagnosis.json, probe.json), with errors that name the file.

    diagnosis = read_diagnosis("runs/x/diagnosis")          # the diagnose step's output directory
    probe = read_artifact_json("runs/x/probe_report", "probe.json", "the probe step's probe_report")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DIAGNOSIS_FILE = "diagnosis.json"
PROBE_FILE = "probe.json"


def read_artifact_json(directory: str | Path, filename: str, what: str) -> dict[str, Any]:
    """The JSON object `filename` inside the artifact `directory` (`what` names the artifact for the message)."""
    path = Path(directory) / filename
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no {filename}; pass {what} directory")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_diagnosis(directory: str | Path) -> dict[str, Any]:
    """diagnosis.json of a diagnose output directory; its `decision` must be an object."""
    diagnosis = read_artifact_json(directory, DIAGNOSIS_FILE, "the diagnose step's output")
    if not isinstance(diagnosis.get("decision"), dict):
        raise ValueError(
            f"{Path(directory) / DIAGNOSIS_FILE}: field 'decision' is missing or not an object; re-run the diagnose step"
        )
    return diagnosis
