"""Task placement in the compiled cluster spec (pipelines/pipeline.py `_place`, `STEPS`, `ClusterSettings`):
retries, timeouts, CPU, scratch and /dev/shm, GPU node selectors, and caching keyed by content."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from pipelines.params import load_profile
from pipelines.pipeline import STEPS, ClusterSettings, compile_pipeline

GPU_STEPS = {"curate", "probe", "diagnose", "rediagnose", "sft", "grpo", "evaluate"}
OTHER_PIPELINES = {"subset", "study-report", "rediagnosis-report"}  # steps of the study and diagnose-only DAGs


def _compile(tmp_path, settings=ClusterSettings()):
    out = tmp_path / "p.yaml"
    compile_pipeline(str(out), load_profile("cluster"), settings)
    spec, platform = [d for d in yaml.safe_load_all(out.read_text()) if d]
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _tasks(spec):
    """Every task of the DAG, nested conditions included: (task name, task spec)."""
    out = []
    for comp in [spec["root"], *spec["components"].values()]:
        for name, task in comp.get("dag", {}).get("tasks", {}).items():
            out.append((name, task))
    return out


def _step(executor: str) -> str:
    return executor.removeprefix("exec-").rsplit("-", 1)[0] if executor[-1].isdigit() else executor.removeprefix("exec-")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return _compile(tmp_path_factory.mktemp("placement"))


def test_every_step_has_a_placement_and_back(compiled):
    spec, _ = compiled
    steps = {_step(e) for e in spec["deploymentSpec"]["executors"]}
    assert steps == set(STEPS) - OTHER_PIPELINES


def test_retries_and_timeouts(compiled):
    spec, platform = compiled
    for name, task in _tasks(spec):
        if "componentRef" in task and task["componentRef"]["name"].startswith("comp-condition"):
            continue
        step = STEPS[_step(task["componentRef"]["name"].removeprefix("comp-"))]
        policy = task["retryPolicy"]
        assert policy["maxRetryCount"] == step.retries, name
        assert policy["backoffDuration"] == "60s" and policy["backoffMaxDuration"] == "3600s", name
    for executor, config in platform.items():
        assert int(config["activeDeadlineSeconds"]) == STEPS[_step(executor)].timeout_s, executor
    assert STEPS["grpo"].retries == 1 and STEPS["grpo"].timeout_s == 72 * 3600  # training resumes; bounded


def test_cpu_scratch_and_shm(compiled):
    spec, platform = compiled
    for executor, e in spec["deploymentSpec"]["executors"].items():
        step = _step(executor)
        res = e["container"]["resources"]
        assert res["resourceCpuRequest"] == STEPS[step].cpu and "resourceCpuLimit" not in res, executor
        env = {v["name"]: v["value"] for v in e["container"].get("env", [])}
        assert env["TMPDIR"] == "/scratch"
        mounts = {m["mountPath"]: m for m in platform[executor]["emptyDirMounts"]}
        assert mounts["/scratch"]["sizeLimit"] == STEPS[step].scratch
        if step in GPU_STEPS:
            assert mounts["/dev/shm"] == {"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": "16Gi", "volumeName": "dshm"}
            assert res["accelerator"]["resourceCount"] in ("1", "4")
        else:  # fingerprint, publish: CPU pods, no GPU, no shared memory volume
            assert "/dev/shm" not in mounts and "accelerator" not in res and "tolerations" not in platform[executor]


def test_gpu_product_selectors(compiled, tmp_path):
    _, platform = compiled
    selected = {_step(e): c.get("nodeSelector", {}).get("labels") for e, c in platform.items()}
    h100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    # The 32B labeller (curate) and the training steps need a large GPU; the 1-GPU 7B steps take any GPU node.
    assert selected == {"curate": h100, "sft": h100, "grpo": h100, "probe": None, "diagnose": None,
                        "evaluate": None, "fingerprint": None, "publish": None, "rediagnose": None}
    _, custom = _compile(tmp_path, dataclasses.replace(ClusterSettings(), train_gpu_product="NVIDIA-H200",
                                                       labeller_gpu_product=""))
    assert custom["exec-grpo"]["nodeSelector"]["labels"] == {"nvidia.com/gpu.product": "NVIDIA-H200"}
    assert "nodeSelector" not in custom["exec-curate"]  # '' = any GPU node


def test_cache_keys_follow_content(compiled):
    """Only curate and probe are cached, and each takes the fingerprint of its remote inputs as a parameter (part of
    KFP's cache key); the fingerprint tasks themselves always run."""
    spec, _ = compiled
    tasks = dict(_tasks(spec))
    cached = {n for n, t in tasks.items() if t.get("cachingOptions", {}).get("enableCache")}
    assert cached == {"curate", "probe"}
    wiring = {}
    for name in ("curate", "probe"):
        fp = tasks[name]["inputs"]["parameters"]["cache_fingerprint"]["taskOutputParameter"]
        wiring[name] = fp["producerTask"]
        assert fp["outputParameterKey"] == "Output"
    assert wiring == {"curate": "fingerprint", "probe": "fingerprint-2"}
    fps = {n: t["inputs"]["parameters"] for n, t in tasks.items() if n.startswith("fingerprint")}
    assert set(fps["fingerprint"]) == {"step", "medmnist_root", "pmc_vqa_root", "labeller_model"}
    assert fps["fingerprint-2"]["model_ref"]["componentInputParameter"] == "model_ref"


def test_publish_ends_each_branch(compiled):
    spec, _ = compiled
    for comp in spec["components"].values():
        tasks = comp.get("dag", {}).get("tasks", {})
        if any(n.startswith("evaluate") for n in tasks):
            pub = next(t for n, t in tasks.items() if n.startswith("publish"))
            ev = next(n for n in tasks if n.startswith("evaluate"))
            assert pub["inputs"]["artifacts"]["results"]["taskOutputArtifact"]["producerTask"] == ev
            assert pub["inputs"]["parameters"]["publish_uri"]["componentInputParameter"].endswith("publish_uri")
