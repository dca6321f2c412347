"""Kubeflow component for the publish step: maps artifacts and parameters to `python -m components.publish` flags."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Model, Output

from components.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def publish(
    model: Input[Model],
    results: Input[Artifact],
    report: Input[HTML],
    diagnosis: Input[Artifact],
    curation_report: Input[Artifact],
    publish_uri: str,
    published: Output[Artifact],
) -> str:
    """Copy the trained model, its report, results, lineage and a model card to publish_uri; returns the URI
    published to ('' when publish_uri is empty)."""
    import json
    import os

    from components.publish.__main__ import main

    rc = main([
        "--model", model.path,
        "--results", results.path,
        "--report", report.path,
        "--diagnosis", diagnosis.path,
        "--curation-report", curation_report.path,
        "--publish-uri", publish_uri,
        "--out", published.path,
    ])
    if rc != 0:
        raise RuntimeError(f"publish launcher exited with status {rc}")
    with open(os.path.join(published.path, "published.json")) as f:
        return json.load(f)["uri"]
