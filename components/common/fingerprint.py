"""One fingerprint of a task's inputs and parameters: the key of its checkpoints (resume), of the pipeline's cache
(a changed input or parameter never reuses a stale result) and of audits.

    key = task_fingerprint("grpo", inputs={"model": "/cache/models/m", "rl_set": "/kfp/rl_set"}, params={...})

An input contributes its content, never its location:
- a MedBridge artifact directory: the content hash recorded in its lineage.json;
- any other local file or directory: the sha256 of its content (`components.common.io.sha256_path`);
- anything else (a hub id, a remote URI): the reference as given, since its content cannot be read here; resolve
  remote references to local copies first (`components.common.storage.local_dir`) to key them by content.
Parameters contribute their canonical JSON. The result is a hex sha256, stable across machines and paths.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from components.common.io import sha256_path
from components.common.lineage import read_lineage


def input_digest(ref: str | Path | None) -> str:
    """What one input contributes to a fingerprint (see the module docstring)."""
    if ref is None or str(ref) == "":
        return "none"
    path = Path(str(ref))
    if path.exists():
        lin = read_lineage(path) if path.is_dir() else None
        if lin and lin.get("sha256"):
            return f"lineage:{lin['sha256']}"
        return f"sha256:{sha256_path(path)}"
    return f"ref:{ref}"


def task_fingerprint(step: str, inputs: dict[str, str | Path | None], params: dict[str, Any]) -> str:
    """sha256 over the step name, each input's content digest (by input name) and the parameters' canonical JSON."""
    doc = {
        "step": step,
        "inputs": {name: input_digest(ref) for name, ref in sorted(inputs.items())},
        "params": params,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()
