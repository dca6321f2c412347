"""The publish step: copy the trained model, its report, results, lineage and a model card to an S3 prefix.

    from components.publish.config import PublishConfig, PublishIO
    from components.publish.run import run_publish
    manifest = run_publish(PublishConfig(), PublishIO(model=..., results=..., report=..., diagnosis=..., out=...,
                                                      publish_uri="s3://models/medbridge/published"))

Layout under <publish_uri>/<name>/ (see components/publish/README.md): model/, results/, report.html,
data_cards/, MODEL_CARD.md, published.json (every file's sha256 and size), lineage.json (uploaded last).
The folder name defaults to the model's content hash, so a retried task publishes to the same place; a different
model is never written over an existing publication unless `overwrite` is set.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
from pathlib import Path
from typing import Any

from components.common.artifacts import read_artifact_json, read_diagnosis
from components.common.io import atomic_dir, atomic_write_text, sha256_file, write_json
from components.common.lineage import LINEAGE_FILE, inputs_synthetic, read_lineage, write_lineage
from components.publish.card import CardInputs, model_card
from components.publish.config import PublishConfig, PublishIO

log = logging.getLogger(__name__)
STEP = "publish"
CARD_FILE = "MODEL_CARD.md"
MANIFEST_FILE = "published.json"
# Uploaded after everything else in their folder: a reader waiting for them sees a complete directory.
LAST = ("config.json", LINEAGE_FILE)


def _files(root: Path, prefix: str, skip: tuple[str, ...] = ()) -> list[tuple[Path, str]]:
    files = sorted((p for p in root.rglob("*") if p.is_file() and p.name not in skip),
                   key=lambda p: (p.name in LAST, str(p)))
    return [(p, f"{prefix}/{p.relative_to(root).as_posix()}") for p in files]


def plan(cfg: PublishConfig, io: PublishIO) -> list[tuple[Path, str]]:
    """(local file, key under the publication folder) for everything copied as is, in upload order."""
    files = _files(Path(io.model), "model")
    files += _files(Path(io.results), "results", skip=() if cfg.include_samples else ("samples.jsonl",))
    files.append((Path(io.report), "report.html"))
    cards = Path(io.curation_report) / "cards" if io.curation_report else None
    if cards is not None and cards.is_dir():
        files += [(p, f"data_cards/{p.name}") for p in sorted(cards.glob("*.md"))]
    return files


def _s3_error(e: Exception, uri: str) -> Exception:
    err = getattr(e, "response", {}).get("Error", {})
    code = err.get("Code", "?")
    if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return PermissionError(f"{uri}: {code}: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (Secret medbridge-s3)")
    if code in ("NoSuchBucket", "404"):
        return FileNotFoundError(f"{uri}: {code}: {err.get('Message', '')}; create the bucket or fix --publish-uri")
    return RuntimeError(f"{uri}: {code}: {err.get('Message', str(e))}")


def _existing_model(client, bucket: str, key: str) -> str | None:
    """The model hash of a publication already at `key` (its published.json), or None."""
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as e:
        if getattr(e, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise _s3_error(e, f"s3://{bucket}/{key}") from None
    return json.loads(body).get("model_sha256")


def run_publish(cfg: PublishConfig, io: PublishIO) -> dict[str, Any]:
    model_lineage = read_lineage(io.model) if Path(io.model).is_dir() else None
    if not model_lineage or not model_lineage.get("sha256"):
        raise FileNotFoundError(f"{io.model}: no lineage.json with a content hash; pass the trained model directory (--model)")
    if not Path(io.report).is_file():
        raise FileNotFoundError(f"{io.report}: no such report file (--report)")
    results = read_artifact_json(io.results, "results.json", "the evaluate step's results")
    diagnosis = read_diagnosis(io.diagnosis)
    name = cfg.name or f"medbridge-{model_lineage['sha256'][:12]}"
    uri = f"{io.publish_uri.rstrip('/')}/{name}" if io.publish_uri else ""
    inputs = {"model": io.model, "results": io.results, "report": io.report, "diagnosis": io.diagnosis}
    if io.curation_report:
        inputs["curation_report"] = io.curation_report
    synthetic = inputs_synthetic(inputs)
    files = plan(cfg, io)

    card = model_card(CardInputs(
        name=cfg.model_name or name, model_lineage=model_lineage, diagnosis=diagnosis, results=results,
        results_lineage=read_lineage(io.results) or {}, uri=uri,
        data_cards=[key.split("/", 1)[1] for _, key in files if key.startswith("data_cards/")], synthetic=synthetic,
    ))
    manifest = {
        "uri": uri,
        "name": name,
        "model_sha256": model_lineage["sha256"],
        "synthetic": synthetic,
        "published_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "files": {key: {"sha256": sha256_file(path), "size": path.stat().st_size} for path, key in files},
    }
    params = {**dataclasses.asdict(cfg), "publish_uri": io.publish_uri}
    with atomic_dir(io.out) as tmp:
        atomic_write_text(tmp / CARD_FILE, card)
        manifest["files"][CARD_FILE] = {"sha256": sha256_file(tmp / CARD_FILE), "size": (tmp / CARD_FILE).stat().st_size}
        write_json(tmp / MANIFEST_FILE, manifest)
        summary = f"published {name} ({len(manifest['files'])} files) to {uri}" if uri else f"model card for {name} (not uploaded)"
        write_lineage(tmp, step=STEP, artifact="published", inputs=inputs, params=params, summary=summary)
        if uri:
            _upload(cfg, uri, files + [(tmp / CARD_FILE, CARD_FILE), (tmp / MANIFEST_FILE, MANIFEST_FILE),
                                       (tmp / LINEAGE_FILE, LINEAGE_FILE)], manifest["model_sha256"])
    return manifest


def _upload(cfg: PublishConfig, uri: str, files: list[tuple[Path, str]], model_sha: str) -> None:
    from boto3.s3.transfer import TransferConfig

    from components.common.storage import parse_s3_uri, s3_client

    bucket, prefix = parse_s3_uri(uri)
    client = s3_client()
    existing = _existing_model(client, bucket, f"{prefix}/{MANIFEST_FILE}")
    if existing is not None and existing != model_sha and not cfg.overwrite:
        raise ValueError(
            f"{uri} already holds another model (sha256 {existing[:12]}…); choose another --name or pass --overwrite"
        )
    transfer = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20, max_concurrency=8)
    for path, key in files:  # in plan order: each folder's config.json / lineage.json last, the root lineage.json last of all
        try:
            client.upload_file(str(path), bucket, f"{prefix}/{key}", Config=transfer)
        except Exception as e:
            if hasattr(e, "response"):
                raise _s3_error(e, f"s3://{bucket}/{prefix}/{key}") from None
            raise
    log.info("published %d file(s) to %s", len(files), uri)
