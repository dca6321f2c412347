"""Kubeflow component for the probe step: maps artifacts and parameters to `python -m components.probe` flags."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from components.common.images import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def probe(
    model_ref: str,
    medmnist_data: Input[Dataset],
    flags: str,
    pooling: str,
    epochs: int,
    image_size: int,
    batch_size: int,
    seed: int,
    probe_report: Output[Artifact],
    metrics: Output[Metrics],
    cache_fingerprint: str = "",  # content of model_ref (components/fingerprint): part of KFP's cache key only
):
    """Probe: pooled frozen-vision-tower features + a linear head per MedMNIST task; Table 1-style report."""
    import json
    import os
    import tempfile

    from components.probe.__main__ import main

    metrics_json = os.path.join(tempfile.mkdtemp(prefix="probe-metrics-"), "metrics.json")
    rc = main([
        "--model", model_ref,
        "--data", medmnist_data.path,
        "--flags", flags,
        "--pooling", pooling,
        "--epochs", str(epochs),
        "--image-size", str(image_size),
        "--batch-size", str(batch_size),
        "--seed", str(seed),
        "--out", probe_report.path,
        "--metrics-json", metrics_json,
    ])
    if rc != 0:
        raise RuntimeError(f"probe launcher exited with status {rc}")
    with open(metrics_json) as f:
        for name, value in json.load(f).items():
            metrics.log_metric(name, value)
