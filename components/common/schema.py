"""Schema versions of the JSON documents MedBridge writes, so a later reader knows what it holds.

    doc = stamp({...}, "diagnosis")                 # adds "schema_version": CURRENT["diagnosis"]
    version = check(doc, "diagnosis", path)         # the version, or ValueError naming the file and the version

Every JSON document an artifact carries (lineage.json, diagnosis.json, probe.json, results.json, the curation
report's documents, tasks.json, train logs, the probe cache's meta.json) and every record the checkpoint registry,
the audit and the trend page write has a top-level integer `schema_version`. A document written before versions
were recorded has none and reads as version 1. A reader states the versions it knows (KNOWN) and refuses any other by
name, rather than guessing at fields that may have changed meaning.

The flat `metrics.json` files are exempt: Kubeflow reads every key of them as a metric, which must be a number.
"""

from __future__ import annotations

from typing import Any

KEY = "schema_version"
# The version each writer stamps now. Bump one when a field changes meaning or is removed, and teach its readers.
CURRENT = {
    "lineage": 2,  # 2: files manifest, findable input locations, run context, environment, optional signature
    "diagnosis": 2,  # 2: chance-corrected support beside the raw numbers, the deciding set, the gate after a bridge
    "probe": 1,
    "probe_features": 1,  # meta.json of the probe's feature cache
    "results": 1,
    "curation": 1,  # the curation report's summary.json, balance.json, validation/*.json
    "medmnist_tasks": 1,  # tasks.json of medmnist_data
    "train_log": 1,  # train_log.json of the sft / grpo model
    "registry": 1,  # an entry of the checkpoint registry (pipelines/watch.py)
    "audit": 1,  # `medbridge audit --json`
    "trend": 1,  # `medbridge trend --json`
}
# Versions each reader understands (1 includes documents written before versions were recorded).
KNOWN = {
    "lineage": (1, 2),
    "diagnosis": (1, 2),
    "probe": (1,),
    "probe_features": (1,),
    "results": (1,),
    "curation": (1,),
    "medmnist_tasks": (1,),
    "train_log": (1,),
    "registry": (1,),
    "audit": (1,),
    "trend": (1,),
}


def stamp(doc: dict[str, Any], kind: str) -> dict[str, Any]:
    """`doc` with its schema version set to the current one of `kind` (first key, for a person reading the file)."""
    return {KEY: CURRENT[kind], **{k: v for k, v in doc.items() if k != KEY}}


def version_of(doc: dict[str, Any]) -> Any:
    """The document's schema version (1 when it has none)."""
    return doc.get(KEY, 1)


def check(doc: dict[str, Any], kind: str, where: str = "") -> int:
    """The schema version of `doc`, a `kind` document; ValueError naming `where` and the version when this reader
    does not know it."""
    version = version_of(doc)
    known = KNOWN[kind]
    if isinstance(version, bool) or not isinstance(version, int) or version not in known:
        newest = max(known)
        hint = "written by a newer MedBridge; upgrade this one" if isinstance(version, int) and version > newest else "not a version MedBridge ever wrote"
        raise ValueError(
            f"{where or kind}: unknown {kind} schema version {version!r} ({hint}); this reader knows "
            f"{', '.join(map(str, known))}"
        )
    return version
