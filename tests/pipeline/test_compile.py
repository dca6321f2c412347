"""The compiled KFP v2 spec: diffed against a checked-in golden file, and checked for the DAG's shape.

Regenerate the golden file after an intended change:
    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/pipeline/test_compile.py
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
from pathlib import Path

import pytest
import yaml

from pipelines.params import PipelineParams, load_profile

GOLDEN = Path(__file__).parent / "golden" / "medbridge_cluster.yaml"
STEPS = ["curate", "probe", "diagnose", "sft", "rediagnose", "grpo", "evaluate"]


def _normalise(text: str) -> str:
    # The SDK version line is the only thing that may differ between installs of the same kfp minor version.
    return "\n".join(l for l in text.splitlines() if "sdkVersion" not in l)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    from pipelines.pipeline import ClusterSettings, compile_pipeline

    out = tmp_path_factory.mktemp("spec") / "pipeline.yaml"
    compile_pipeline(str(out), load_profile("cluster"), ClusterSettings())
    return out.read_text()


def test_matches_golden(compiled):
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(compiled)
    diff = "\n".join(
        difflib.unified_diff(_normalise(GOLDEN.read_text()).splitlines(), _normalise(compiled).splitlines(), "golden", "compiled", lineterm="", n=2)
    )
    assert not diff, f"compiled spec differs from {GOLDEN} (UPDATE_GOLDEN=1 to accept):\n{diff[:4000]}"


def test_spec_holds_conditions_and_every_step(compiled):
    docs = list(yaml.safe_load_all(compiled))
    spec = docs[0]
    executors = spec["deploymentSpec"]["executors"]
    for step in STEPS:
        assert any(name.startswith(f"exec-{step}") for name in executors), f"no executor for {step}"
    comps = spec["components"]

    def conditions(name):
        return [t["triggerPolicy"]["condition"] for t in comps[name]["dag"]["tasks"].values()]

    def source(inp) -> str:
        """'task-output' an artifact input comes from, directly or through a condition's pipeline channel."""
        if "taskOutputArtifact" in inp:
            return f"{inp['taskOutputArtifact']['producerTask']}-{inp['taskOutputArtifact']['outputArtifactKey']}"
        return inp["componentInputArtifact"].removeprefix("pipelinechannel--")

    # dsl.If on the diagnose step's string, and its dsl.Else as the negation; inside the bridge, the same on the gate
    assert conditions("comp-condition-branches-1") == [
        "inputs.parameter_values['pipelinechannel--diagnose-Output'] == 'bridge'",
        "!(inputs.parameter_values['pipelinechannel--diagnose-Output'] == 'bridge')",
    ]
    assert conditions("comp-condition-branches-2") == [
        "inputs.parameter_values['pipelinechannel--rediagnose-Output'] == 'proceed'",
        "!(inputs.parameter_values['pipelinechannel--rediagnose-Output'] == 'proceed')",
    ]
    dags = {k: v["dag"]["tasks"] for k, v in comps.items() if k.startswith("comp-condition-") and "branches" not in k}
    # The bridge trains SFT, re-diagnoses the SFT model, and branches on the gate
    bridge = next(t for t in dags.values() if "sft" in t)
    assert {"sft", "rediagnose", "condition-branches-2"} == set(bridge)
    rd = bridge["rediagnose"]["inputs"]["artifacts"]
    assert source(rd["model"]) == "sft-model" and source(rd["rl_diag_set"]) == "curate-rl_diag_set"
    # proceed: GRPO from the SFT model, evaluated with the SFT model beside it (SFT and RL gains apart)
    proceed = next(t for t in dags.values() if "grpo" in t and "evaluate" in t)
    assert source(proceed["grpo"]["inputs"]["artifacts"]["init_model"]) == "sft-model"
    ev = proceed["evaluate"]["inputs"]
    assert source(ev["artifacts"]["sft_model"]) == "sft-model"
    assert source(ev["artifacts"]["rediagnosis"]) == "rediagnose-diagnosis"
    # stop: no GRPO; the SFT model is evaluated as the final model, and the report says why
    stop = next(t for t in dags.values() if set(t) == {"evaluate-2", "publish-2"})
    ev = stop["evaluate-2"]["inputs"]
    assert source(ev["artifacts"]["model"]) == "sft-model"
    assert ev["parameters"]["final_stage"]["runtimeValue"]["constant"] == "sft"
    # sharpen: GRPO on the input model, no SFT
    sharpen = next(t for t in dags.values() if "grpo-2" in t)
    assert "init_model" not in sharpen["grpo-2"]["inputs"].get("artifacts", {})
    # the GRPO support guard watches the held-out PMC-VQA slice the branch was decided on
    for dag in (proceed, sharpen):
        grpo_task = next(t for n, t in dag.items() if n.startswith("grpo"))
        assert source(grpo_task["inputs"]["artifacts"]["watch_set"]) == "curate-rl_diag_set"
    # every path publishes the model it ends with: GRPO's, or the SFT model when the gate stopped RL
    assert source(stop["publish-2"]["inputs"]["artifacts"]["model"]) == "sft-model"
    assert source(proceed["publish"]["inputs"]["artifacts"]["model"]) == "grpo-model"
    assert source(sharpen["publish-3"]["inputs"]["artifacts"]["model"]) == "grpo-2-model"
    # Cluster placement: GPU requests and the k8s platform config (secrets, PVC, tolerations) are present.
    assert "nvidia.com/gpu" in compiled
    assert len(docs) == 2 and "kubernetes" in docs[1]["platforms"]


def test_every_harness_setting_reaches_diagnose_rediagnose_and_evaluate(compiled):
    spec = yaml.safe_load_all(compiled).__next__()
    harness = {"k", "prompt_format", "max_new_tokens", "temperature", "top_p", "backend", "min_pixels", "max_pixels",
               "judge_model", "judge_mode", "chance_ceiling", "seed"}
    tasks = {n: t for c in spec["components"].values() if "dag" in c for n, t in c["dag"]["tasks"].items()}
    tasks.update(spec["root"]["dag"]["tasks"])
    for name in ("diagnose", "rediagnose", "evaluate", "evaluate-2", "evaluate-3"):
        params = tasks[name]["inputs"]["parameters"]
        for h in harness:
            assert params[h]["componentInputParameter"].endswith(h), (name, h)


def test_cluster_profile_defaults_are_the_spec_defaults(compiled):
    spec = yaml.safe_load_all(compiled).__next__()
    params = spec["root"]["inputDefinitions"]["parameters"]
    cluster = load_profile("cluster")
    assert params["k"]["defaultValue"] == cluster.k == 16
    assert params["tau"]["defaultValue"] == cluster.tau
    assert params["model_ref"]["defaultValue"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    # the paper code's harness on the cluster: 2,048 new tokens, its pixel bounds, every answer judged
    assert params["max_new_tokens"]["defaultValue"] == 2048
    assert (params["min_pixels"]["defaultValue"], params["max_pixels"]["defaultValue"]) == (1280 * 28 * 28, 16384 * 28 * 28)
    assert params["judge_mode"]["defaultValue"] == "all" and "32B" in params["judge_model"]["defaultValue"]


def test_pipeline_signature_mirrors_params_dataclass():
    from pipelines.pipeline import make_pipeline

    fn = make_pipeline().pipeline_func
    sig = inspect.signature(fn)
    fields = {f.name: f for f in dataclasses.fields(PipelineParams)}
    assert list(sig.parameters) == list(fields)
    for name, p in sig.parameters.items():
        assert p.default == fields[name].default, name
        assert p.annotation in (type(fields[name].default), type(fields[name].default).__name__), name
