"""Kubeflow component of the sharpen (GRPO) step: maps artifacts and parameters to `python -m components.grpo`."""

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
    prompt_format: str,
    max_steps: int,
    learning_rate: float,
    num_generations: int,
    lora: bool,
    consistency_bonus: float,
    max_new_tokens: int,
    k: int,
    seed: int,
    model: Output[Model],
    metrics: Output[Metrics],
    init_model: Optional[Input[Model]] = None,
):
    import json
    import os

    from components.grpo.__main__ import main

    argv = [
        "--model", model_ref,
        "--rl-set", rl_set.path,
        "--watch-set", watch_set.path,
        "--diagnosis", diagnosis.path,
        "--out", model.path,
        "--prompt-format", prompt_format,
        "--max-steps", str(max_steps),
        "--learning-rate", str(learning_rate),
        "--num-generations", str(num_generations),
        "--lora", str(lora).lower(),
        "--consistency-bonus", str(consistency_bonus),
        "--max-new-tokens", str(max_new_tokens),
        "--watch-max-new-tokens", str(max_new_tokens),
        "--k", str(k),
        "--seed", str(seed),
    ]
    if init_model is not None:
        argv += ["--init-model", init_model.path]
    rc = main(argv)
    if rc != 0:
        raise RuntimeError(f"grpo launcher exited with status {rc}")
    with open(os.path.join(model.path, "metrics.json")) as f:
        values = json.load(f)
    for key in ("reward_mean_first", "reward_mean_last", "pass_at_k_before", "pass_at_k_after", "acc_at_1_before",
                "acc_at_1_after"):
        if values[key] is not None:
            metrics.log_metric(key, float(values[key]))
    metrics.log_metric("support_collapsed", 1.0 if values["support_collapsed"] else 0.0)
