"""Kubeflow component of the bridge (SFT) step: maps artifacts and parameters to `python -m components.sft`."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.common.images import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def sft(
    model_ref: str,
    sft_set: Input[Dataset],
    diagnosis: Input[Artifact],
    prompt_format: str,
    max_steps: int,
    learning_rate: float,
    lora: bool,
    per_device_batch_size: int,
    max_examples: int,
    seed: int,
    model: Output[Model],
    metrics: Output[Metrics],
):
    import json
    import os

    from components.sft.__main__ import main

    rc = main(
        [
            "--model", model_ref,
            "--sft-set", sft_set.path,
            "--diagnosis", diagnosis.path,
            "--out", model.path,
            "--prompt-format", prompt_format,
            "--max-steps", str(max_steps),
            "--learning-rate", str(learning_rate),
            "--lora", str(lora).lower(),
            "--per-device-batch-size", str(per_device_batch_size),
            "--max-examples", str(max_examples),
            "--seed", str(seed),
        ]
    )
    if rc != 0:
        raise RuntimeError(f"sft launcher exited with status {rc}")
    with open(os.path.join(model.path, "metrics.json")) as f:
        values = json.load(f)
    for key in ("final_loss", "steps", "n_examples", "params_changed_fraction"):
        metrics.log_metric(key, float(values[key]))
