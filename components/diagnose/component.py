"""Kubeflow component for the diagnose step: maps artifacts and parameters to `python -m components.diagnose` flags
and returns the branch ("bridge" | "sharpen") the pipeline's DAG branches on."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from components.common.images import SERVE_IMAGE


@dsl.component(base_image=SERVE_IMAGE, install_kfp_package=False)
def diagnose(
    model_ref: str,
    diag_set: Input[Dataset],
    probe_report: Input[Artifact],
    k: int,
    tau: float,
    prompt_format: str,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    backend: str,
    force_branch: str,
    seed: int,
    diagnosis: Output[Artifact],
    metrics: Output[Metrics],
) -> str:
    """Diagnose support: Acc@1 vs Pass@k per task and modality, bootstrap intervals, bridge/sharpen decision."""
    import json
    import os
    import tempfile

    from components.diagnose.__main__ import main

    tmp = tempfile.mkdtemp(prefix="diagnose-")
    metrics_json = os.path.join(tmp, "metrics.json")
    branch_file = os.path.join(tmp, "branch.txt")
    rc = main([
        "--model", model_ref,
        "--data", diag_set.path,
        "--probe", probe_report.path,
        "--k", str(k),
        "--tau", str(tau),
        "--prompt-format", prompt_format,
        "--max-new-tokens", str(max_new_tokens),
        "--temperature", str(temperature),
        "--top-p", str(top_p),
        "--backend", backend,
        "--force-branch", force_branch,
        "--seed", str(seed),
        "--out", diagnosis.path,
        "--metrics-json", metrics_json,
        "--branch-file", branch_file,
    ])
    if rc != 0:
        raise RuntimeError(f"diagnose launcher exited with status {rc}")
    with open(metrics_json) as f:
        for name, value in json.load(f).items():
            metrics.log_metric(name, value)
    with open(branch_file) as f:
        return f.read().strip()
