"""kfp component of the evaluate step: maps artifacts and parameters to `python -m components.evaluate` flags."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components.common.images import SERVE_IMAGE


@dsl.component(base_image=SERVE_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    base_model_ref: str,
    eval_set: Input[Dataset],
    diagnosis: Input[Artifact],
    probe_report: Input[Artifact],
    curation_report: Input[Artifact],
    benchmarks_root: str,
    benchmarks: str,
    k: int,
    prompt_format: str,
    max_new_tokens: int,
    train_task: str,
    seed: int,
    results: Output[Artifact],
    report: Output[HTML],
    metrics: Output[Metrics],
):
    """Score the trained and the base model on the benchmarks and MedMNIST transfer; write the final report."""
    import json
    import os

    from components.evaluate.__main__ import METRICS_FILE, main

    rc = main(
        [
            "--model", model.path,
            "--base-model", base_model_ref,
            "--eval-set", eval_set.path,
            "--diagnosis", diagnosis.path,
            "--probe-report", probe_report.path,
            "--curation-report", curation_report.path,
            "--benchmarks-root", benchmarks_root,
            "--benchmarks", benchmarks,
            "--k", str(k),
            "--prompt-format", prompt_format,
            "--max-new-tokens", str(max_new_tokens),
            "--train-task", train_task,
            "--seed", str(seed),
            "--out-results", results.path,
            "--out-report", report.path,
        ]
    )
    if rc != 0:
        raise RuntimeError(f"python -m components.evaluate exited with status {rc}")
    with open(os.path.join(results.path, METRICS_FILE)) as f:
        for name, value in json.load(f).items():
            metrics.log_metric(name, value)
