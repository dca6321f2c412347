"""Kubeflow component of the sharpen (GRPO) step: maps artifacts and parameters to `python -m components.grpo`.

The recipe (a configs/ name or a YAML path) holds every training setting; the pipeline adds what must agree with
the other steps (prompt format, seed) and `overrides`, a YAML mapping of recipe fields. On a node with several GPUs
the launcher starts one process per GPU itself (accelerate launch)."""

from typing import Optional

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.common.images import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def grpo(
    model_ref: str,
    rl_set: Input[Dataset],
    watch_set: Input[Dataset],
    diagnosis: Input[Artifact],
    recipe: str,
    overrides: str,
    prompt_format: str,
    seed: int,
    model: Output[Model],
    metrics: Output[Metrics],
    init_model: Optional[Input[Model]] = None,
):
    import json
    import os

    from components.common.recipes import override_flags
    from components.grpo.__main__ import main

    argv = [
        "--config", recipe,
        "--model", model_ref,
        "--rl-set", rl_set.path,
        "--watch-set", watch_set.path,
        "--diagnosis", diagnosis.path,
        "--out", model.path,
        "--prompt-format", prompt_format,
        "--seed", str(seed),
        *override_flags(overrides, "grpo_overrides"),
    ]
    if init_model is not None:
        argv += ["--init-model", init_model.path]
    rc = main(argv)
    if rc != 0:
        raise RuntimeError(f"grpo launcher exited with status {rc}")
    with open(os.path.join(model.path, "metrics.json")) as f:
        values = json.load(f)
    for key in ("reward_mean_first", "reward_mean_last", "pass_at_k_before", "pass_at_k_after", "acc_at_1_before",
                "acc_at_1_after", "pass_corrected_before", "pass_corrected_after", "acc_corrected_before",
                "acc_corrected_after", "steps", "shipped_step"):
        if values.get(key) is not None:
            metrics.log_metric(key, float(values[key]))
    metrics.log_metric("support_collapsed", 1.0 if values["support_collapsed"] else 0.0)
