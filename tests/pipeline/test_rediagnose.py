"""The diagnose-only pipeline: its compiled shape (no training task, curation cached, the privacy flag on the tasks
that write samples and reports), and a kfp.local run on the demo assets that publishes its diagnosis to the real S3
server, whose run directory then passes `medbridge audit` and whose published diagnosis feeds `medbridge trend`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.params import load_profile
from pipelines.rediagnose import PARAMS, arguments, compile_rediagnose


def _spec(tmp_path, **kw):
    out = tmp_path / "rediagnose.yaml"
    compile_rediagnose(str(out), load_profile("cluster"), **kw)
    return list(yaml.safe_load_all(out.read_text()))


def test_compiled_pipeline_diagnoses_and_never_trains(tmp_path):
    spec, platform = _spec(tmp_path)
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"curate", "probe", "diagnose", "rediagnosis-report"}
    assert not any(n.startswith(("sft", "grpo", "evaluate")) for n in spec["deploymentSpec"]["executors"])
    assert tasks["curate"]["cachingOptions"].get("enableCache") is True  # curation reused from Kubeflow's cache
    assert tasks["diagnose"]["cachingOptions"].get("enableCache") is not True
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {*PARAMS, "publish_uri"}
    execs = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert {e["name"] for e in execs["exec-diagnose"]["fieldPathAsEnv"]} == {"KFP_RUN_ID", "KFP_TASK_NAME"}


def test_compiled_spec_parses_strictly_with_the_backend_protos(tmp_path):
    """What the Kubeflow backend parses: the pipeline spec and each task's Kubernetes config, unknown fields refused."""
    from google.protobuf.json_format import ParseDict
    from kfp.kubernetes import kubernetes_executor_config_pb2
    from kfp.pipeline_spec import pipeline_spec_pb2

    spec, platform = _spec(tmp_path, private=True)
    ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    for name, cfg in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].items():
        ParseDict(cfg, kubernetes_executor_config_pb2.KubernetesExecutorConfig())


def test_signing_key_secret_is_wired_only_when_named(tmp_path, monkeypatch):
    def secrets(spec):
        execs = spec[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        return {s["secretName"] for s in execs["exec-diagnose"].get("secretAsEnv", [])}

    monkeypatch.delenv("MEDBRIDGE_LINEAGE_SECRET", raising=False)
    assert "medbridge-lineage" not in secrets(_spec(tmp_path))  # opt-in: the Secret must exist for pods to start
    monkeypatch.setenv("MEDBRIDGE_LINEAGE_SECRET", "medbridge-lineage")
    assert "medbridge-lineage" in secrets(_spec(tmp_path))


def test_private_runs_set_the_flag_on_the_tasks_that_write_texts(tmp_path):
    spec, _ = _spec(tmp_path, private=True)
    env = {n: {e["name"]: e["value"] for e in x["container"].get("env", [])}
           for n, x in spec["deploymentSpec"]["executors"].items()}
    assert env["exec-diagnose"]["MEDBRIDGE_PRIVATE"] == "1" and env["exec-rediagnosis-report"]["MEDBRIDGE_PRIVATE"] == "1"
    assert "MEDBRIDGE_PRIVATE" not in env["exec-curate"]


def test_arguments_are_the_pipeline_parameters_only():
    args = arguments(load_profile("cluster", {"model_ref": "s3://m/c"}), "s3://s/d/x")
    assert set(args) == {*PARAMS, "publish_uri"} and args["model_ref"] == "s3://m/c" and "lora" not in args


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from filelock import FileLock

    from pipelines.demo import build_demo_assets

    root = tmp_path_factory.getbasetemp().parent / "demo-assets"  # shared with test_local_dag.py's runs
    with FileLock(f"{root}.lock"):
        return build_demo_assets(root)


@pytest.mark.slow
def test_local_run_publishes_a_diagnosis_that_audits_and_trends(assets, tmp_path, s3, monkeypatch, capsys):
    from kfp import local

    from pipelines.cli import main as cli
    from pipelines.rediagnose import make_rediagnose_pipeline

    client, bucket = s3
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    params = load_profile("demo", {**assets, "labeller_model": assets["model_ref"]})
    root = tmp_path / "kfp"
    root.mkdir()
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    publish = f"s3://{bucket}/state/diagnoses/demo"
    make_rediagnose_pipeline()(**arguments(params, publish))
    run_dir = next(p for p in root.iterdir() if p.name.startswith("medbridge-rediagnose"))
    tasks = {p.name for p in run_dir.iterdir() if p.is_dir()}
    assert tasks == {"curate", "probe", "diagnose", "rediagnosis-report"}
    report = next(run_dir.glob("rediagnosis-report/report*"))
    html = report.read_text()
    assert "MedBridge re-diagnosis report" in html and "Audit (inputs checked against their lineage)" in html
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="state/diagnoses/demo/")["Contents"]}
    assert {"state/diagnoses/demo/diagnosis/diagnosis.json", "state/diagnoses/demo/diagnosis/lineage.json",
            "state/diagnoses/demo/report.html"} <= keys
    lineage = json.loads((run_dir / "diagnose" / "diagnosis" / "lineage.json").read_text())
    assert lineage["location"] == str(run_dir / "diagnose" / "diagnosis") and lineage["schema_version"] == 2
    assert lineage["inputs"]["diag_set"]["ref"] == str(run_dir / "curate" / "diag_set")

    capsys.readouterr()
    assert cli(["audit", str(run_dir)]) == 0
    assert "tampered" not in capsys.readouterr().out.lower()
    assert cli(["trend", f"s3://{bucket}/state/diagnoses", "--out", str(tmp_path / "trend.html")]) == 0
    assert "1 diagnosed checkpoint(s), 0 refused" in capsys.readouterr().out
