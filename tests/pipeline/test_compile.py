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
STEPS = ["curate", "probe", "diagnose", "sft", "grpo", "evaluate"]


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


def test_spec_holds_condition_and_all_six_steps(compiled):
    docs = list(yaml.safe_load_all(compiled))
    spec = docs[0]
    executors = spec["deploymentSpec"]["executors"]
    for step in STEPS:
        assert any(name.startswith(f"exec-{step}") for name in executors), f"no executor for {step}"
    comps = spec["components"]
    branches = next(v for k, v in comps.items() if k.startswith("comp-condition-branches"))
    conditions = [t["triggerPolicy"]["condition"] for t in branches["dag"]["tasks"].values()]
    # dsl.If on the diagnose step's string, and its dsl.Else as the negation.
    assert conditions == [
        "inputs.parameter_values['pipelinechannel--diagnose-Output'] == 'bridge'",
        "!(inputs.parameter_values['pipelinechannel--diagnose-Output'] == 'bridge')",
    ]
    # The bridge branch trains SFT then GRPO from the SFT model; the sharpen branch runs GRPO on the input model.
    bridge = next(v for k, v in comps.items() if k.startswith("comp-condition") and "sft" in v["dag"]["tasks"])
    grpo_in_bridge = next(t for n, t in bridge["dag"]["tasks"].items() if n.startswith("grpo"))
    assert grpo_in_bridge["inputs"]["artifacts"]["init_model"]["taskOutputArtifact"]["producerTask"] == "sft"
    sharpen = next(v for k, v in comps.items() if k.startswith("comp-condition") and "sft" not in v["dag"]["tasks"] and "evaluate-2" in v["dag"]["tasks"])
    grpo_in_sharpen = next(t for n, t in sharpen["dag"]["tasks"].items() if n.startswith("grpo"))
    assert "init_model" not in grpo_in_sharpen["inputs"].get("artifacts", {})
    # Cluster placement: GPU requests and the k8s platform config (secrets, PVC, tolerations) are present.
    assert "nvidia.com/gpu" in compiled
    assert len(docs) == 2 and "kubernetes" in docs[1]["platforms"]


def test_cluster_profile_defaults_are_the_spec_defaults(compiled):
    spec = yaml.safe_load_all(compiled).__next__()
    params = spec["root"]["inputDefinitions"]["parameters"]
    cluster = load_profile("cluster")
    assert params["k"]["defaultValue"] == cluster.k == 16
    assert params["tau"]["defaultValue"] == cluster.tau
    assert params["model_ref"]["defaultValue"] == "Qwen/Qwen2.5-VL-7B-Instruct"


def test_pipeline_signature_mirrors_params_dataclass():
    from pipelines.pipeline import make_pipeline

    fn = make_pipeline().pipeline_func
    sig = inspect.signature(fn)
    fields = {f.name: f for f in dataclasses.fields(PipelineParams)}
    assert list(sig.parameters) == list(fields)
    for name, p in sig.parameters.items():
        assert p.default == fields[name].default, name
        assert p.annotation in (type(fields[name].default), type(fields[name].default).__name__), name
