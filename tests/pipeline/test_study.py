"""The RQ3 study as a second pipeline: compiled (ParallelFor over the tasks, both bridge sources), and run end to end
through kfp.local on the demo profile at tiny sizes, ending with its transfer report."""

from __future__ import annotations

import json

import pytest
import yaml


def test_study_compiles_with_a_parallel_for_and_both_bridge_sources(tmp_path):
    from pipelines.study import compile_study, load_study

    out = compile_study(str(tmp_path / "study.yaml"), load_study("cluster"))
    spec = next(yaml.safe_load_all(open(out)))  # the second document is the kubernetes platform config
    comps = spec["components"]
    loops = {k: v for k, v in comps.items() if k.startswith("comp-for-loop")}
    assert len(loops) == 2  # one loop per bridge source (the SFT step's output, or a given checkpoint)
    for loop in loops.values():
        tasks = loop["dag"]["tasks"]
        assert sum(n.startswith("grpo") for n in tasks) == 2 and sum(n.startswith("evaluate") for n in tasks) == 2
        assert sum(n.startswith("subset") for n in tasks) == 2  # the task's train split and its val split
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["study_tasks"]["defaultValue"] == ["organamnist", "pathmnist", "octmnist"]
    assert params["bridged_model_ref"]["defaultValue"] == ""
    branches = next(v for k, v in comps.items() if k.startswith("comp-condition-branches"))
    assert [t["triggerPolicy"]["condition"] for t in branches["dag"]["tasks"].values()] == [
        "inputs.parameter_values['pipelinechannel--bridged_model_ref'] == ''",
        "!(inputs.parameter_values['pipelinechannel--bridged_model_ref'] == '')",
    ]
    # the report collects every run of the loop, from both starts
    report = next(t for c in comps.values() if "dag" in c for n, t in c["dag"]["tasks"].items()
                  if n.startswith("study-report"))
    assert set(report["inputs"]["artifacts"]) == {"from_base", "from_bridged"}


@pytest.mark.parametrize("items, message", [
    (["study_tasks=bloodmnist"], "not among flags"),  # a task the curated data does not hold
    (["study_tasks="], "study_tasks is empty"),
    (["rl_max_records=many"], "expected an integer"),
])
def test_study_parameters_are_checked(items, message):
    from pipelines.study import load_study

    with pytest.raises(ValueError, match=message):
        load_study("demo", items)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from filelock import FileLock

    from pipelines.demo import build_demo_assets

    root = tmp_path_factory.getbasetemp().parent / "demo-assets"
    with FileLock(f"{root}.lock"):
        return build_demo_assets(root)


def test_study_runs_on_the_demo_profile(assets, tmp_path, monkeypatch):
    from pipelines.study import load_study, run_study_local

    monkeypatch.setenv("MEDBRIDGE_CACHE", str(tmp_path / "cache"))  # checkpoints and rationales of this run only

    # Tiny sizes: two of the three tasks (OrganA and OCT hold every regime of the paper: in-domain, within-modality
    # OrganC and Pneumonia, cross-modality OCT->Path, OrganA->Path, OrganA->OCT), the tasks those regimes need.
    tiny = ["study_tasks=organamnist,octmnist", "flags=organamnist,organcmnist,pneumoniamnist,pathmnist,octmnist",
            "k=2", "max_new_tokens=32", "grpo_overrides={max_steps: 1, num_generations: 2}", "sft_overrides={max_steps: 2}",
            "diag_per_class=1", "eval_per_class=1", "sft_per_class=2", "target_diag_per_modality=1", "rl_size=8",
            "rl_max_records=8"]
    extra = {k: v for k, v in assets.items() if k != "benchmarks_root"}
    params = load_study("demo", tiny, {**extra, "labeller_model": assets["model_ref"]})
    result = run_study_local(params, out_dir=tmp_path, demo=False)

    study = json.loads(result.study_json.read_text())
    # four runs: two tasks, each from the base and from the bridged (SFT) model
    assert sorted((r["train_task"], r["init"]) for r in study["runs"]) == sorted(
        (t, i) for t in ("organamnist", "octmnist") for i in ("base", "bridged"))
    bridged = [r for r in study["runs"] if r["init"] == "bridged"]
    assert all(r["stages"] == ["base", "sft", "trained"] for r in bridged)  # before RL = the bridged model
    cells = study["cells"]
    pairs = {(c["rl_task"], c["task"]): c["regime"] for c in cells if c["paper_pair"]}
    # the paper's pairs of these two tasks that the demo's data holds (OrganS is not among them)
    assert pairs == {
        ("organamnist", "organamnist"): "in-domain",
        ("octmnist", "octmnist"): "in-domain", ("organamnist", "organcmnist"): "within-modality",
        ("organamnist", "pneumoniamnist"): "within-modality (larger shift)",
        ("octmnist", "pathmnist"): "cross-modality", ("organamnist", "pathmnist"): "cross-modality",
        ("organamnist", "octmnist"): "cross-modality",
    }
    for c in cells:  # before and after with intervals, the paired change with its interval
        assert c["acc_before"] is not None and len(c["acc_after_ci"]) == 2 and len(c["pass_delta"]["ci"]) == 2
    # the bridge's SFT data: when it held a transfer target, the report says so
    targets = study["sft_data_includes_transfer_targets"]
    html = result.report_html.read_text()
    assert ("sft-targets" in html) == bool(targets)
    assert 'id="sec-heatmap"' in html and "data:image/png;base64," in html and 'id="sec-pairs"' in html
    assert "SYNTHETIC" in html and study["synthetic"]
    assert (result.study_json.parent / "transfer_heatmap.png").stat().st_size > 1000
