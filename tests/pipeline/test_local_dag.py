"""The whole DAG through kfp.local on the demo profile: both branches, end to end.

Each run builds the tiny random-weight model and synthetic data, then runs curate, probe, diagnose, (sft), grpo and
evaluate as subprocesses, exactly as `medbridge run` does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.params import load_profile

EXPECTED = {
    "bridge": ["curate", "probe", "diagnose", "sft", "grpo", "evaluate"],
    "sharpen": ["curate", "probe", "diagnose", "grpo", "evaluate"],
}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from filelock import FileLock

    from pipelines.demo import build_demo_assets

    # Built once and shared by the pytest-xdist workers (the base temp's parent is common to them).
    root = tmp_path_factory.getbasetemp().parent / "demo-assets"
    with FileLock(f"{root}.lock"):
        return build_demo_assets(root)


@pytest.mark.parametrize("branch", ["bridge", "sharpen"])
def test_dag_runs_branch_end_to_end(branch, assets, tmp_path, monkeypatch):
    from pipelines.local import run_local

    monkeypatch.setenv("MEDBRIDGE_CACHE", str(tmp_path / "cache"))  # checkpoints and rationales of this run only

    params = load_profile("demo", {"force_branch": branch, **assets, "labeller_model": assets["model_ref"]})
    result = run_local(params, out_dir=tmp_path, demo=False)

    assert result.branch == branch
    task_dirs = {p.name for p in result.run_dir.iterdir() if p.is_dir()}
    assert ("sft" in task_dirs) == (branch == "bridge")

    # The diagnosis recorded the operator override and the measured numbers that would otherwise have decided.
    diagnosis = json.loads(next(result.run_dir.glob("diagnose/diagnosis/diagnosis.json")).read_text())
    assert diagnosis["decision"]["branch"] == branch and diagnosis["decision"]["forced"] is True
    assert set(diagnosis["overall"]["pass_at_k"]) == {str(k) for k in range(1, params.k + 1)}

    # The report exists, is marked synthetic, states the branch, and its lineage chain covers every step that ran.
    html = result.report_html.read_text()
    assert "SYNTHETIC" in html.upper() and branch in html
    assert result.report_html.name == "report.html"
    lineage = json.loads((result.report_html.parent / "lineage.json").read_text())
    steps = [h["step"] for h in lineage["history"]]
    for step in EXPECTED[branch][:-1]:
        assert step in steps, f"{step} missing from the lineage chain {steps}"
    assert lineage["synthetic"] is True

    # Post-training really changed the weights: the trained model differs from the input model.
    from safetensors.numpy import load_file

    trained = load_file(str(next(result.run_dir.glob("grpo*/model/model.safetensors"))))
    base = load_file(str(Path(assets["model_ref"]) / "model.safetensors"))
    assert any(not (trained[k] == base[k]).all() for k in base if k in trained)
