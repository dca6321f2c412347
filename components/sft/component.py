"""Kubeflow component of the bridge (SFT) step: maps artifacts and parameters to `python -m components.sft`.

The recipe (a configs/ name or a YAML path) holds every training setting; the pipeline adds what must agree with
the other steps (prompt format, seed), the teacher that writes rationales (the labeller model) and `overrides`, a
YAML mapping of recipe fields. On a node with several GPUs the launcher starts one process per GPU itself."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.common.images import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def sft(
    model_ref: str,
    sft_set: Input[Dataset],
    diagnosis: Input[Artifact],
    teacher_model: str,
    recipe: str,
    overrides: str,
    prompt_format: str,
    seed: int,
    model: Output[Model],
    metrics: Output[Metrics],
):
    import json
    import os

    from components.common.recipes import override_flags
    from components.sft.__main__ import main

    rc = main(
        [
            "--config", recipe,
            "--model", model_ref,
            "--sft-set", sft_set.path,
            "--diagnosis", diagnosis.path,
            "--out", model.path,
            "--teacher-model", teacher_model,
            "--prompt-format", prompt_format,
            "--seed", str(seed),
            *override_flags(overrides, "sft_overrides"),
        ]
    )
    if rc != 0:
        raise RuntimeError(f"sft launcher exited with status {rc}")
    with open(os.path.join(model.path, "metrics.json")) as f:
        values = json.load(f)
    for key in ("final_loss", "steps", "n_examples", "params_changed_fraction"):
        if values.get(key) is not None:
            metrics.log_metric(key, float(values[key]))
