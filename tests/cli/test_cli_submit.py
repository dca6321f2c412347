"""`medbridge submit` and `submit --schedule` against a KFP API server over real HTTP (tests/kfp_api_server.py):
the auth header, namespace, service account, pipeline version, cron and parameters that reach the server."""

from __future__ import annotations

import pytest
import yaml

from pipelines.cli import main
from kfp_api_server import FakeKFP  # tests/kfp_api_server.py (the folder of tests/conftest.py is on sys.path)

REGISTRY = "registry.hospital.example/ml"
TOKEN = "projected-sa-token-for-the-test"


@pytest.fixture
def kfp_server():
    servers = []

    def start(**kw) -> FakeKFP:
        servers.append(FakeKFP(**kw).start())
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(autouse=True)
def _no_ambient_token(monkeypatch, tmp_path):
    monkeypatch.delenv("KF_PIPELINES_SA_TOKEN_PATH", raising=False)
    for var in ("MEDBRIDGE_IMAGE_REGISTRY", "MEDBRIDGE_KFP_NAMESPACE", "MEDBRIDGE_SERVICE_ACCOUNT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("pipelines.cli.DEFAULT_TOKEN_PATH", str(tmp_path / "absent-token"))


def _token(tmp_path, value=TOKEN):
    path = tmp_path / "token"
    path.write_text(value)
    return str(path)


def submit(server: FakeKFP, *extra: str) -> int:
    return main(["submit", "--host", server.url, "--image-registry", REGISTRY, "--image-tag", "0.2.0", *extra])


def test_submit_sends_token_namespace_parameters_and_a_pipeline_version(kfp_server, tmp_path, capsys):
    server = kfp_server(token=TOKEN, multi_user=True)
    rc = submit(server, "--namespace", "team-radiology", "--service-account", "medbridge-runner",
                "--token-file", _token(tmp_path), "--model-ref", "s3://models/ckpt-42", "--set", "tau=0.6",
                "--experiment", "rediagnosis")
    assert rc == 0, capsys.readouterr().err
    # Every API call but healthz carries the token from the file (the server would answer 401 otherwise).
    authed = [r for r in server.requests if r["path"] != "/apis/v2beta1/healthz"]
    assert authed and all(r["headers"].get("authorization") == f"Bearer {TOKEN}" for r in authed)
    # The experiment and the pipeline live in the profile's namespace.
    (exp,) = server.experiments.values()
    assert (exp["display_name"], exp["namespace"]) == ("rediagnosis", "team-radiology")
    (pipe,) = server.pipelines.values()
    assert (pipe["display_name"], pipe["namespace"]) == ("medbridge", "team-radiology")
    # One run, referencing an uploaded version of that pipeline, with this run's parameters.
    (run,) = server.runs.values()
    ref = run["pipeline_version_reference"]
    assert ref["pipeline_id"] == pipe["pipeline_id"] and ref["pipeline_version_id"] in server.versions
    assert server.versions[ref["pipeline_version_id"]]["display_name"].startswith("medbridge-")
    assert run["experiment_id"] == exp["experiment_id"] and run["service_account"] == "medbridge-runner"
    params = run["runtime_config"]["parameters"]
    assert params["model_ref"] == "s3://models/ckpt-42" and params["tau"] == 0.6 and params["k"] == 16
    assert run["display_name"] == "medbridge-ckpt-42"
    # The uploaded spec names the site's images, nothing from the placeholder registry.
    package = server.packages[ref["pipeline_version_id"]]
    images = {e["container"]["image"] for e in yaml.safe_load(package.split("\n---\n")[0])["deploymentSpec"]["executors"].values()}
    assert images == {f"{REGISTRY}/medbridge-{n}:0.2.0" for n in ("cpu", "train", "serve")}
    out = capsys.readouterr().out
    assert f"submitted run {run['run_id']}" in out and "namespace team-radiology" in out


@pytest.mark.parametrize(
    "given, sent",
    [
        ("0 3 * * *", "0 0 3 * * *"),  # five fields: daily at 03:00, seconds added for KFP
        ("0 17 * * * *", "0 17 * * * *"),  # six fields: passed through
    ],
)
def test_schedule_creates_a_recurring_run_with_kfp_cron(kfp_server, tmp_path, capsys, given, sent):
    server = kfp_server(token=TOKEN)
    rc = submit(server, "--token-file", _token(tmp_path), "--schedule", given, "--model-ref", "s3://models/latest",
                "--max-concurrency", "2")
    assert rc == 0, capsys.readouterr().err
    assert not server.runs
    (job,) = server.recurring_runs.values()
    assert job["trigger"]["cron_schedule"]["cron"] == sent
    assert job["no_catchup"] is True and int(job["max_concurrency"]) == 2 and job["mode"] == "ENABLE"
    assert job["runtime_config"]["parameters"]["model_ref"] == "s3://models/latest"
    assert job["pipeline_version_reference"]["pipeline_version_id"] in server.versions
    assert all(r["headers"].get("authorization") == f"Bearer {TOKEN}" for r in server.requests if "healthz" not in r["path"])
    assert sent in capsys.readouterr().out


def test_malformed_schedule_is_refused_before_any_request(kfp_server, capsys):
    server = kfp_server()
    assert submit(server, "--schedule", "0 3 * *") == 2
    err = capsys.readouterr().err
    assert "medbridge: error: cron '0 3 * *' has 4 field(s); expected five fields" in err
    assert server.requests == []


def test_resubmitting_reuses_the_pipeline_version(kfp_server, capsys):
    server = kfp_server()
    assert submit(server, "--model-ref", "s3://models/a") == 0
    assert submit(server, "--model-ref", "s3://models/b") == 0  # another checkpoint: run parameters, same spec
    uploads = [r for r in server.requests if r["path"].endswith(("/upload", "/upload_version"))]
    assert len(uploads) == 2  # the pipeline (with its first version) and the content-named version, once
    assert len(server.runs) == 2 and len({r["pipeline_version_reference"]["pipeline_version_id"] for r in server.runs.values()}) == 1


def test_the_cronjob_environment_supplies_token_namespace_and_account(kfp_server, tmp_path, monkeypatch, capsys):
    """The re-diagnosis CronJob passes none of these flags: the pod's projected token path and the ConfigMap's
    MEDBRIDGE_KFP_NAMESPACE / MEDBRIDGE_SERVICE_ACCOUNT (k8s/base/config.env) are the defaults."""
    server = kfp_server(token=TOKEN, multi_user=True)
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", _token(tmp_path))
    monkeypatch.setenv("MEDBRIDGE_KFP_NAMESPACE", "medbridge")
    monkeypatch.setenv("MEDBRIDGE_SERVICE_ACCOUNT", "medbridge-runner")
    assert submit(server) == 0, capsys.readouterr().err
    (run,) = server.runs.values()
    assert run["service_account"] == "medbridge-runner"
    assert {e["namespace"] for e in server.experiments.values()} == {"medbridge"}


def test_token_file_is_reread_on_every_call(kfp_server, tmp_path, capsys):
    """Projected tokens rotate: a later call must send the file's current content."""
    server = kfp_server(token=None)
    path = _token(tmp_path, "first")
    assert submit(server, "--token-file", path) == 0
    (tmp_path / "token").write_text("second")
    assert submit(server, "--token-file", path) == 0
    sent = [r["headers"].get("authorization") for r in server.requests if "healthz" not in r["path"]]
    assert "Bearer first" in sent and sent[-1] == "Bearer second"


def test_without_the_token_the_server_refuses_and_submit_says_so(kfp_server, capsys):
    server = kfp_server(token=TOKEN)
    assert submit(server) == 2
    err = capsys.readouterr().err
    assert "answered 401" in err and server.url in err
    assert not server.runs


def test_multi_user_needs_a_namespace(kfp_server, capsys):
    server = kfp_server(multi_user=True)
    assert submit(server) == 2
    assert "multi-user Kubeflow: pass --namespace" in capsys.readouterr().err
    assert not server.experiments


def test_placeholder_registry_is_refused(kfp_server, capsys):
    server = kfp_server()
    assert main(["submit", "--host", server.url]) == 2
    err = capsys.readouterr().err
    assert "placeholder registry 'registry.invalid/medbridge'" in err and "--image-registry" in err
    assert server.requests == []


def test_missing_token_file_named_explicitly_is_an_error(kfp_server, tmp_path, capsys):
    server = kfp_server()
    assert submit(server, "--token-file", str(tmp_path / "nope")) == 2
    assert "--token-file" in capsys.readouterr().err


def test_digest_pins_an_image(kfp_server, capsys):
    server = kfp_server()
    digest = "sha256:" + "ab" * 32
    assert submit(server, "--image-digest", f"medbridge-train={digest}") == 0, capsys.readouterr().err
    (package,) = {v for k, v in server.packages.items() if server.versions[k]["display_name"].startswith("medbridge-")}
    assert f"image: {REGISTRY}/medbridge-train:0.2.0@{digest}" in package
    assert f"image: {REGISTRY}/medbridge-serve:0.2.0\n" in package
