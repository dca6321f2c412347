"""The whole DAG through kfp.local on the demo profile: the sharpen branch, and the bridge branch with both outcomes of
the re-diagnosis gate (GRPO forced by the operator; the run stopped after the bridge), end to end.

Each run builds the tiny random-weight model and synthetic data, then runs curate, probe, diagnose, (sft, rediagnose),
(grpo) and evaluate as subprocesses, exactly as `medbridge run` does. Smaller sets than the demo profile's, and two
benchmarks (one with open-ended questions), keep the runs short; `medbridge run` runs the demo profile as it is.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.params import load_profile

CASES = {
    # name: (overrides, steps that ran, gate outcome)
    "sharpen": ({"force_branch": "sharpen"}, ["curate", "probe", "diagnose", "grpo", "evaluate"], None),
    # tau 1.0: no measured support reaches it, so the gate would stop; the operator forces GRPO, recorded as forced
    "bridge-forced-rl": ({"force_branch": "bridge", "tau": 1.0, "force_rl": True},
                         ["curate", "probe", "diagnose", "sft", "rediagnose", "grpo", "evaluate"], "proceed"),
    # the same measurement without the override: the run ends after the bridge with a report of the numbers
    "bridge-stopped": ({"force_branch": "bridge", "tau": 1.0},
                       ["curate", "probe", "diagnose", "sft", "rediagnose", "evaluate"], "stop"),
}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from filelock import FileLock

    from pipelines.demo import build_demo_assets

    # Built once and shared by the pytest-xdist workers (the base temp's parent is common to them).
    root = tmp_path_factory.getbasetemp().parent / "demo-assets"
    with FileLock(f"{root}.lock"):
        return build_demo_assets(root)


@pytest.mark.parametrize("case", list(CASES))
def test_dag_runs_end_to_end(case, assets, tmp_path, monkeypatch):
    from pipelines.local import run_local

    monkeypatch.setenv("MEDBRIDGE_CACHE", str(tmp_path / "cache"))  # checkpoints and rationales of this run only
    overrides, steps_run, gate = CASES[case]
    small = {"benchmarks": "pmc-vqa,vqa-rad", "k": 4, "diag_per_class": 1, "eval_per_class": 1,
             "target_diag_per_modality": 2, "sft_overrides": "{max_steps: 3}", "grpo_overrides": "{max_steps: 2}"}
    params = load_profile("demo", {**overrides, **assets, "labeller_model": assets["model_ref"], **small})
    result = run_local(params, out_dir=tmp_path, demo=False)
    branch = overrides["force_branch"]

    assert result.branch == branch and result.gate == gate
    task_dirs = {p.name.split("-")[0] for p in result.run_dir.iterdir() if p.is_dir()}
    # every path also fingerprints the cached steps' inputs first and publishes the model it ends with last
    assert task_dirs == set(steps_run) | {"fingerprint", "publish"}, task_dirs
    published = json.loads(next(result.run_dir.glob("publish*/published/published.json")).read_text())
    assert published["files"], published

    # The diagnosis decided on the held-out PMC-VQA slice, recorded the override and the measured numbers
    diagnosis = json.loads(next(result.run_dir.glob("diagnose/diagnosis/diagnosis.json")).read_text())
    assert diagnosis["decision"]["branch"] == branch and diagnosis["decision"]["forced"] is True
    assert diagnosis["decided_on"]["set"] == "target" and diagnosis["schema_version"] == 2
    assert set(diagnosis["overall"]["pass_at_k"]) == {str(k) for k in range(1, params.k + 1)}
    assert "corrected" in diagnosis["overall"] and diagnosis["breadth"]["overall"]["n"] > 0

    html = result.report_html.read_text()
    results = json.loads((result.report_html.parent / "results.json").read_text())
    if gate is not None:
        rediagnosis = json.loads(next(result.run_dir.glob("rediagnose/diagnosis/diagnosis.json")).read_text())
        assert rediagnosis["stage"] == "after-bridge" and rediagnosis["gate"]["outcome"] == gate
        assert rediagnosis["gate"]["forced"] is (gate == "proceed")  # proceeding here needed the override
        assert f'id="gate" data-outcome="{gate}"' in html
    if gate == "proceed":  # base, SFT and SFT+GRPO on the same questions, deltas kept apart
        assert results["stages"] == ["base", "sft", "trained"]
        assert set(results["benchmarks"]["pmc-vqa"]["deltas"]) == {"base_to_sft", "sft_to_rl", "base_to_final"}
        assert 'id="sec-stages"' in html and "Δ SFT → RL" in html
    if gate == "stop":  # GRPO did not run: the SFT model is the final one and the report says so
        assert results["final_stage"] == "sft" and "STOP (GRPO not run)" in html
        assert "SFT model (GRPO not run)" in html

    # The report exists, is marked synthetic, states the branch, and its lineage chain covers every step that ran.
    assert "SYNTHETIC" in html.upper() and branch in html
    assert result.report_html.name == "report.html"
    assert "vqa-rad (open)" in results["open"]  # open-ended questions scored apart
    lineage = json.loads((result.report_html.parent / "lineage.json").read_text())
    steps = [h["step"] for h in lineage["history"]]
    for step in steps_run[:-1]:
        assert step in steps, f"{step} missing from the lineage chain {steps}"
    assert lineage["synthetic"] is True

    # Post-training really changed the weights: the final model differs from the input model.
    from safetensors.numpy import load_file

    final = next(result.run_dir.glob("grpo*/model/model.safetensors" if "grpo" in steps_run else "sft/model/model.safetensors"))
    trained = load_file(str(final))
    base = load_file(str(Path(assets["model_ref"]) / "model.safetensors"))
    assert any(not (trained[k] == base[k]).all() for k in base if k in trained)
