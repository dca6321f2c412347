"""kfp components of the evaluate step: map artifacts and parameters to `python -m components.evaluate` flags
(`evaluate`) and to `python -m components.evaluate.study` (`study_report`, the RQ3 study's transfer report)."""

from typing import List, Optional

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components.common.images import SERVE_IMAGE


@dsl.component(base_image=SERVE_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    base_model_ref: str,
    eval_set: Input[Dataset],
    benchmarks_root: str,
    benchmarks: str,
    k: int,
    prompt_format: str,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    backend: str,
    min_pixels: int,
    max_pixels: int,
    judge_model: str,
    judge_mode: str,
    chance_ceiling: float,
    train_task: str,
    final_stage: str,
    seed: int,
    results: Output[Artifact],
    report: Output[HTML],
    metrics: Output[Metrics],
    sft_model: Optional[Input[Model]] = None,
    diagnosis: Optional[Input[Artifact]] = None,
    rediagnosis: Optional[Input[Artifact]] = None,
    probe_report: Optional[Input[Artifact]] = None,
    curation_report: Optional[Input[Artifact]] = None,
):
    """Score the base, SFT (when given) and final model on the benchmarks and MedMNIST transfer; write the report."""
    import json
    import os

    from components.evaluate.__main__ import METRICS_FILE, main

    argv = [
        "--model", model.path,
        "--base-model", base_model_ref,
        "--eval-set", eval_set.path,
        "--benchmarks-root", benchmarks_root,
        "--benchmarks", benchmarks,
        "--k", str(k),
        "--prompt-format", prompt_format,
        "--max-new-tokens", str(max_new_tokens),
        "--temperature", str(temperature),
        "--top-p", str(top_p),
        "--backend", backend,
        "--min-pixels", str(min_pixels),
        "--max-pixels", str(max_pixels),
        "--judge-model", judge_model,
        "--judge-mode", judge_mode,
        "--chance-ceiling", str(chance_ceiling),
        "--train-task", train_task,
        "--final-stage", final_stage,
        "--seed", str(seed),
        "--out-results", results.path,
        "--out-report", report.path,
    ]
    for flag, artifact in (("--sft-model", sft_model), ("--diagnosis", diagnosis), ("--rediagnosis", rediagnosis),
                           ("--probe-report", probe_report), ("--curation-report", curation_report)):
        if artifact is not None:
            argv += [flag, artifact.path]
    rc = main(argv)
    if rc != 0:
        raise RuntimeError(f"python -m components.evaluate exited with status {rc}")
    with open(os.path.join(results.path, METRICS_FILE)) as f:
        for name, value in json.load(f).items():
            metrics.log_metric(name, value)


@dsl.component(base_image=SERVE_IMAGE, install_kfp_package=False)
def study_report(
    from_base: Input[List[Artifact]],
    from_bridged: Input[List[Artifact]],
    bridged_model_ref: str,
    report: Output[HTML],
    study: Output[Artifact],
):
    """Collect the RQ3 study's runs (GRPO per task, from the base and from a bridged model) into a transfer report."""
    from components.evaluate.study import main

    argv = ["--from-base", *[a.path for a in from_base], "--from-bridged", *[a.path for a in from_bridged],
            "--bridged-model", bridged_model_ref,
            "--out", study.path, "--out-report", report.path]
    rc = main(argv)
    if rc != 0:
        raise RuntimeError(f"python -m components.evaluate.study exited with status {rc}")
