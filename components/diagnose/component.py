"""Kubeflow components of the diagnose step: map artifacts and parameters to `python -m components.diagnose` flags.

`diagnose` returns the branch ("bridge" | "sharpen") the DAG branches on; `rediagnose` measures the bridged (SFT)
model the same way and returns the gate ("proceed" | "stop") that decides whether GRPO runs after the bridge."""

from typing import Optional

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.common.images import SERVE_IMAGE


@dsl.component(base_image=SERVE_IMAGE, install_kfp_package=False)
def diagnose(
    model_ref: str,
    diag_set: Input[Dataset],
    k: int,
    tau: float,
    chance_ceiling: float,
    prompt_format: str,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    backend: str,
    min_pixels: int,
    max_pixels: int,
    judge_model: str,
    judge_mode: str,
    force_branch: str,
    seed: int,
    diagnosis: Output[Artifact],
    metrics: Output[Metrics],
    rl_diag_set: Optional[Input[Dataset]] = None,
    probe_report: Optional[Input[Artifact]] = None,
) -> str:
    """Diagnose support: Acc@1 vs Pass@k (raw and chance-corrected) on the RL target slice and MedMNIST, bootstrap
    intervals, bridge/sharpen decision."""
    import json
    import os
    import tempfile

    from components.diagnose.__main__ import main

    tmp = tempfile.mkdtemp(prefix="diagnose-")
    metrics_json = os.path.join(tmp, "metrics.json")
    branch_file = os.path.join(tmp, "branch.txt")
    argv = [
        "--model", model_ref,
        "--data", diag_set.path,
        "--k", str(k),
        "--tau", str(tau),
        "--chance-ceiling", str(chance_ceiling),
        "--prompt-format", prompt_format,
        "--max-new-tokens", str(max_new_tokens),
        "--temperature", str(temperature),
        "--top-p", str(top_p),
        "--backend", backend,
        "--min-pixels", str(min_pixels),
        "--max-pixels", str(max_pixels),
        "--judge-model", judge_model,
        "--judge-mode", judge_mode,
        "--force-branch", force_branch,
        "--seed", str(seed),
        "--out", diagnosis.path,
        "--metrics-json", metrics_json,
        "--branch-file", branch_file,
    ]
    if rl_diag_set is not None:
        argv += ["--target-data", rl_diag_set.path]
    if probe_report is not None:
        argv += ["--probe", probe_report.path]
    rc = main(argv)
    if rc != 0:
        raise RuntimeError(f"diagnose launcher exited with status {rc}")
    with open(metrics_json) as f:
        for name, value in json.load(f).items():
            metrics.log_metric(name, value)
    with open(branch_file) as f:
        return f.read().strip()


@dsl.component(base_image=SERVE_IMAGE, install_kfp_package=False)
def rediagnose(
    model: Input[Model],
    diag_set: Input[Dataset],
    rl_diag_set: Input[Dataset],
    k: int,
    tau: float,
    chance_ceiling: float,
    prompt_format: str,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    backend: str,
    min_pixels: int,
    max_pixels: int,
    judge_model: str,
    judge_mode: str,
    force_rl: bool,
    seed: int,
    diagnosis: Output[Artifact],
    metrics: Output[Metrics],
) -> str:
    """Re-diagnose the bridged (SFT) model on the same sets with the same harness; "proceed" runs GRPO, "stop" ends
    the run with a report of the numbers."""
    import json
    import os
    import tempfile

    from components.diagnose.__main__ import main

    tmp = tempfile.mkdtemp(prefix="rediagnose-")
    metrics_json = os.path.join(tmp, "metrics.json")
    gate_file = os.path.join(tmp, "gate.txt")
    rc = main([
        "--model", model.path,
        "--data", diag_set.path,
        "--target-data", rl_diag_set.path,
        "--after-bridge", "true",
        "--force-rl", str(force_rl).lower(),
        "--k", str(k),
        "--tau", str(tau),
        "--chance-ceiling", str(chance_ceiling),
        "--prompt-format", prompt_format,
        "--max-new-tokens", str(max_new_tokens),
        "--temperature", str(temperature),
        "--top-p", str(top_p),
        "--backend", backend,
        "--min-pixels", str(min_pixels),
        "--max-pixels", str(max_pixels),
        "--judge-model", judge_model,
        "--judge-mode", judge_mode,
        "--seed", str(seed),
        "--out", diagnosis.path,
        "--metrics-json", metrics_json,
        "--branch-file", gate_file,
    ])
    if rc != 0:
        raise RuntimeError(f"diagnose launcher (after the bridge) exited with status {rc}")
    with open(metrics_json) as f:
        for name, value in json.load(f).items():
            metrics.log_metric(name, value)
    with open(gate_file) as f:
        return f.read().strip()
