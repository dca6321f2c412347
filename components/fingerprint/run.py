"""Content fingerprints of a task's remote inputs, computed where their content is visible: in the cluster, with
the same credentials and endpoint the step itself will use.

    fingerprint(FingerprintConfig(step="curate"), {"medmnist_root": "s3://data/medmnist", "labeller": "Qwen/..."})

Kubeflow keys its cache on a task's parameters as written (`s3://models/latest` today is the same string as
yesterday). The pipeline passes the fingerprint of a cached task's inputs to that task as one more parameter
(`cache_fingerprint`), so the cache key changes exactly when the content behind the references does.

What one reference contributes (then combined by `components.common.fingerprint.task_fingerprint`):
- `s3://bucket/prefix`: every object under the prefix (key, size, ETag), listed without downloading anything;
- a Hugging Face id: its current commit (the hub, or the local cache's refs/main when HF_HUB_OFFLINE=1);
  when neither is available the id itself, with a warning that the cache is then keyed by the name only;
- a local path: its content (a MedBridge artifact's lineage hash, else the sha256 of the files).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from components.common.fingerprint import input_digest, task_fingerprint
from components.fingerprint.config import FingerprintConfig

log = logging.getLogger(__name__)


def s3_digest(uri: str, client=None) -> str:
    """sha256 over the (key, size, ETag) of every object under an s3:// prefix; FileNotFoundError when empty."""
    from components.common.storage import parse_s3_uri, s3_client

    bucket, prefix = parse_s3_uri(uri)
    client = client or s3_client()
    key_prefix = f"{prefix}/" if prefix else ""
    h, n = hashlib.sha256(), 0
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key_prefix):
            for obj in page.get("Contents", []):
                h.update(f"{obj['Key'][len(key_prefix):]}\0{obj['Size']}\0{obj.get('ETag', '')}\n".encode())
                n += 1
    except Exception as e:
        if hasattr(e, "response"):
            err = e.response.get("Error", {})
            raise FileNotFoundError(f"{uri}: {err.get('Code')}: {err.get('Message', '')}") from None
        raise
    if n == 0:
        raise FileNotFoundError(f"{uri}: no objects under this prefix (endpoint {client.meta.endpoint_url})")
    return f"s3:{h.hexdigest()}"


def hub_digest(repo_id: str) -> str:
    """'hub:<id>@<commit>' for a Hugging Face model id, or 'ref:<id>' when its commit cannot be known here."""
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    if not offline:
        try:
            from huggingface_hub import HfApi

            return f"hub:{repo_id}@{HfApi().model_info(repo_id).sha}"
        except Exception as e:  # no network, gated, unknown: fall back to the local cache
            log.warning("could not ask the hub for %s (%s); trying the local cache", repo_id, type(e).__name__)
    from huggingface_hub.constants import HF_HUB_CACHE

    ref = Path(HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "refs" / "main"
    if ref.is_file():
        return f"hub:{repo_id}@{ref.read_text().strip()}"
    log.warning("%s: commit unknown (offline, not cached): the cache key holds the name only", repo_id)
    return f"ref:{repo_id}"


def ref_digest(ref: str, resolve_hub: bool = True) -> str:
    if ref.startswith("s3://"):
        return s3_digest(ref)
    if Path(ref).exists():
        return input_digest(ref)
    if resolve_hub and ref.count("/") == 1 and not ref.startswith(("/", ".")):
        return hub_digest(ref)
    return f"ref:{ref}"


def fingerprint(cfg: FingerprintConfig, refs: dict[str, str]) -> str:
    digests = {name: ref_digest(ref, cfg.resolve_hub) for name, ref in sorted(refs.items())}
    for name, digest in digests.items():
        log.info("%s: %s -> %s", name, refs[name], digest)
    return task_fingerprint(cfg.step, digests, {})
