"""`medbridge watch` and the checkpoint registry against real counterparts: the SeaweedFS S3 server (fixture `s3`)
and the tests' Kubeflow Pipelines API server (tests/kfp_api_server.py: the v2beta1 endpoints the watcher uses through
kfp.Client, with the backend's unique experiment names). Two watchers race as two real processes; a watcher is
killed between submitting and recording; a checkpoint is overwritten in place; a run fails; the webhook is a real
server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# tests/kfp_api_server.py (tests/ is on sys.path)
from kfp_api_server import FakeKFP, run_specs

from components.common.storage import upload_dir
from pipelines import watch
from pipelines.cli import main as cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def kfp_api():
    """The Kubeflow Pipelines API server of the tests (tests/kfp_api_server.py), real HTTP on a loopback port."""
    server = FakeKFP().start()
    yield server
    server.stop()


class Hook:
    """A webhook receiver: every JSON body POSTed to it."""

    def __init__(self):
        received = self.received = []

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook?token=s3cr3t-hook-token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# ---- helpers --------------------------------------------------------------------------------------------------


def _checkpoint(tmp_path, name, weights: bytes, lineage_step: str | None = None):
    d = tmp_path / "src" / name
    d.mkdir(parents=True)
    (d / "config.json").write_text('{"model_type": "qwen2_5_vl"}')
    (d / "model.safetensors").write_bytes(weights)
    if lineage_step:
        (d / "lineage.json").write_text(json.dumps({"schema_version": 2, "step": lineage_step, "artifact": "model"}))
    return d


def _upload(tmp_path, bucket, name, weights, **kw):
    upload_dir(_checkpoint(tmp_path, f"{name}-{uuid.uuid4().hex[:6]}", weights, **kw), f"s3://{bucket}/ckpts/{name}",
               progress=False)


def _args(bucket, kfp_api, *extra):
    return ["watch", f"s3://{bucket}/ckpts", "--state", f"s3://{bucket}/state", "--host", kfp_api.url, "--once",
            "--json", "--no-gpu", *extra]


def _watch(capsys, bucket, kfp_api, *extra):
    rc = cli(_args(bucket, kfp_api, *extra))
    out = capsys.readouterr().out
    rows = json.loads(out)["rows"]
    return rc, {r["checkpoint"].rsplit("/", 1)[-1]: r for r in rows}


def _entry(client, bucket, sha):
    return json.loads(client.get_object(Bucket=bucket, Key=f"state/registry/{sha}.json")["Body"].read())


# ---- the registry -----------------------------------------------------------------------------------------------


def test_seaweedfs_enforces_conditional_puts_and_the_fallback_is_detected(s3):
    """This SeaweedFS refuses a second `If-None-Match: *` PUT, so the watcher uses it; a server that ignores the
    header (here: the same server, with the header stripped from requests) is detected and gets the lock."""
    client, bucket = s3
    assert watch.State(f"s3://{bucket}/state", client=client).claim_mode == "conditional"
    from components.common.storage import s3_client

    blind = s3_client()

    def strip(request, **kw):
        if "If-None-Match" in request.headers:
            del request.headers["If-None-Match"]

    blind.meta.events.register("before-sign.s3.PutObject", strip)
    assert watch.State(f"s3://{bucket}/state", client=blind).claim_mode == "lock"


@pytest.mark.parametrize("mode", ["conditional", "lock"])
def test_a_claim_is_held_by_exactly_one_watcher(s3, mode):
    client, bucket = s3
    a = watch.State(f"s3://{bucket}/state", client=client, claim_mode=mode)
    b = watch.State(f"s3://{bucket}/state", client=client, claim_mode=mode)
    assert a.claim("c0ffee", 1) is True
    assert b.claim("c0ffee", 1) is False  # the same content and attempt: taken
    assert b.claim("c0ffee", 2) is True  # the next attempt is a new claim
    if mode == "lock":  # interleaved: B's claim lands before A lists, so neither may think it holds attempt 3
        b.put(b.key("claims", "c0ffee", "attempt-3", f"{b.token}.json"), {"token": b.token})
        assert a.claim("c0ffee", 3) is False


def test_new_checkpoint_is_diagnosed_once_and_done_only_when_kfp_says_so(s3, kfp_api, capsys, tmp_path):
    client, bucket = s3
    _upload(tmp_path, bucket, "step-100", b"w1" * 64)
    client.put_object(Bucket=bucket, Key="ckpts/notes.txt", Body=b"a loose object")
    client.put_object(Bucket=bucket, Key="ckpts/half/model.safetensors", Body=b"still uploading")
    rc, rows = _watch(capsys, bucket, kfp_api)
    assert rc == 0
    assert rows["step-100"]["action"] == "submitted" and rows["step-100"]["run_id"]
    assert rows["notes.txt"]["action"] == "skipped" and rows["half"]["action"] == "skipped"  # rows, not errors
    sha = rows["step-100"]["sha256"]
    assert kfp_api.created() == [watch.run_name(sha, 1)]
    run = next(iter(kfp_api.runs.values()))
    # the diagnose-only pipeline: nothing trains on a schedule
    assert run_specs(run)[0]["pipelineInfo"]["name"] == "medbridge-rediagnose"
    params = run["runtime_config"]["parameters"]
    assert params["model_ref"] == f"s3://{bucket}/ckpts/step-100"
    assert params["publish_uri"] == f"s3://{bucket}/state/diagnoses/{sha}"
    entry = _entry(client, bucket, sha)
    assert entry["status"] == "submitted" and entry["attempts"][0]["run_id"] == run["run_id"]

    _, rows = _watch(capsys, bucket, kfp_api)  # still running: nothing new, not done
    assert rows["step-100"]["action"] == "running" and len(kfp_api.runs) == 1
    kfp_api.set_state(watch.run_name(sha, 1), "SUCCEEDED")
    _, rows = _watch(capsys, bucket, kfp_api)
    assert rows["step-100"]["action"] == "succeeded" and _entry(client, bucket, sha)["status"] == "succeeded"
    _, rows = _watch(capsys, bucket, kfp_api)
    assert rows["step-100"]["action"] == "succeeded" and len(kfp_api.runs) == 1  # never submitted again


def test_same_content_under_another_name_is_not_submitted_again(s3, kfp_api, capsys, tmp_path):
    client, bucket = s3
    _upload(tmp_path, bucket, "a", b"same" * 50)
    _watch(capsys, bucket, kfp_api)
    _upload(tmp_path, bucket, "b-copy", b"same" * 50)
    _, rows = _watch(capsys, bucket, kfp_api)
    assert rows["b-copy"]["action"] == "duplicate" and len(kfp_api.runs) == 1
    assert _entry(client, bucket, rows["b-copy"]["sha256"])["checkpoints"] == [
        f"s3://{bucket}/ckpts/a", f"s3://{bucket}/ckpts/b-copy"]


def test_overwritten_checkpoint_is_diagnosed_again(s3, kfp_api, capsys, tmp_path):
    client, bucket = s3
    _upload(tmp_path, bucket, "latest", b"v1" * 64)
    _, first = _watch(capsys, bucket, kfp_api)
    client.put_object(Bucket=bucket, Key="ckpts/latest/model.safetensors", Body=b"v2" * 64)  # overwritten in place
    _, rows = _watch(capsys, bucket, kfp_api)
    row = rows["latest"]
    assert row["action"] == "submitted" and row["sha256"] != first["latest"]["sha256"]
    assert f"was {first['latest']['sha256'][:12]}" in row["detail"]
    assert len(kfp_api.runs) == 2


def test_failed_run_is_retried_then_given_up_with_a_webhook(s3, kfp_api, capsys, tmp_path, monkeypatch):
    client, bucket = s3
    hook = Hook()
    monkeypatch.setenv("MEDBRIDGE_WEBHOOK_URL", hook.url)
    try:
        _upload(tmp_path, bucket, "flaky", b"f" * 100)
        _, rows = _watch(capsys, bucket, kfp_api, "--max-attempts", "2")
        sha = rows["flaky"]["sha256"]
        kfp_api.set_state(watch.run_name(sha, 1), "FAILED")
        _, rows = _watch(capsys, bucket, kfp_api, "--max-attempts", "2")
        assert rows["flaky"]["action"] == "submitted" and "retry 2/2" in rows["flaky"]["detail"]
        kfp_api.set_state(watch.run_name(sha, 2), "FAILED")
        _, rows = _watch(capsys, bucket, kfp_api, "--max-attempts", "2")
        assert rows["flaky"]["action"] == "failed"
        assert kfp_api.created() == sorted([watch.run_name(sha, 1), watch.run_name(sha, 2)])
        entry = _entry(client, bucket, sha)
        assert entry["status"] == "failed" and [a["state"] for a in entry["attempts"]] == ["FAILED", "FAILED"]
        assert [h["event"] for h in hook.received] == ["run_failed"]
        assert hook.received[0]["checkpoint"] == f"s3://{bucket}/ckpts/flaky"
        _, rows = _watch(capsys, bucket, kfp_api, "--max-attempts", "2")
        assert rows["flaky"]["action"] == "failed" and len(kfp_api.runs) == 2 and len(hook.received) == 1
    finally:
        hook.close()


def _env(s3_env: dict) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), **s3_env}


def _s3_env():
    return {k: os.environ[k] for k in ("MEDBRIDGE_S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}


def test_crash_between_submit_and_record_is_recovered_without_a_second_run(s3, kfp_api, capsys, tmp_path):
    client, bucket = s3
    _upload(tmp_path, bucket, "crashy", b"c" * 100)
    cmd = [sys.executable, "-m", "pipelines.cli", *_args(bucket, kfp_api)]
    proc = subprocess.Popen(cmd, env=_env(_s3_env()), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    kfp_api.on_create = lambda run: os.kill(proc.pid, signal.SIGKILL)  # dies after KFP stored the run
    proc.communicate(timeout=120)
    kfp_api.on_create = None
    assert proc.returncode == -signal.SIGKILL and len(kfp_api.runs) == 1
    sha = next(iter(kfp_api.runs.values()))["display_name"].split("-")[2]
    entry = next(json.loads(client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read())
                 for o in client.list_objects_v2(Bucket=bucket, Prefix="state/registry/")["Contents"])
    assert entry["status"] == "claimed" and entry["attempts"][0]["run_id"] is None and entry["sha256"].startswith(sha)
    _, rows = _watch(capsys, bucket, kfp_api)  # within the lease: another watcher may still be submitting
    assert rows["crashy"]["action"] == "claimed-elsewhere" and len(kfp_api.runs) == 1
    _, rows = _watch(capsys, bucket, kfp_api, "--lease", "0")  # abandoned: found in Kubeflow by its name
    assert rows["crashy"]["action"] == "recorded" and rows["crashy"]["run_id"] == next(iter(kfp_api.runs))
    assert len(kfp_api.runs) == 1 and _entry(client, bucket, entry["sha256"])["status"] == "submitted"


def test_claim_that_never_submitted_is_taken_over(s3, kfp_api, capsys, tmp_path):
    client, bucket = s3
    _upload(tmp_path, bucket, "orphan", b"o" * 100)
    state = watch.State(f"s3://{bucket}/state", client=client)
    from components.common.io import manifest_digest
    from components.common.storage import remote_manifest

    sha = manifest_digest({r: m["sha256"] for r, m in remote_manifest(f"s3://{bucket}/ckpts/orphan", client=client).items()})
    assert state.claim(sha, 1)  # a watcher claims, writes the entry, and dies before submitting
    state.update(sha, lambda e: {"sha256": sha, "checkpoints": [f"s3://{bucket}/ckpts/orphan"], "status": "claimed",
                                 "claimed_at": "2020-01-01T00:00:00+00:00", "claimed_by": "dead",
                                 "attempts": [{"attempt": 1, "run_name": watch.run_name(sha, 1), "run_id": None}]})
    _, rows = _watch(capsys, bucket, kfp_api)
    assert rows["orphan"]["action"] == "submitted" and kfp_api.created() == [watch.run_name(sha, 2)]


@pytest.mark.parametrize("mode", ["conditional", "lock"])
def test_two_watcher_processes_racing_submit_each_content_once(s3, kfp_api, tmp_path, mode):
    client, bucket = s3
    for i in range(4):
        _upload(tmp_path, bucket, f"step-{i}", f"weights-{i}".encode() * 40)
    _upload(tmp_path, bucket, "step-0-copy", b"weights-0" * 40)  # same content as step-0
    cmd = [sys.executable, "-m", "pipelines.cli", *_args(bucket, kfp_api, "--claim-mode", mode)]
    procs = [subprocess.Popen(cmd, env=_env(_s3_env()), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    names = kfp_api.created()
    assert len(names) == len(set(names))  # never the same run twice
    shas = {n.split("-")[2] for n in names}
    rows = [r for out, _ in outs for r in json.loads(out)["rows"]]
    submitted = [r for r in rows if r["action"] == "submitted"]
    assert len(submitted) == len(names) == len(shas)
    # In lock mode both racers may back off the same content; whatever was not submitted now is next time.
    cli_rc = subprocess.run(cmd, env=_env(_s3_env()), capture_output=True, text=True, timeout=180)
    assert cli_rc.returncode == 0, (cli_rc.stdout[-3000:], cli_rc.stderr[-2000:])
    assert len(kfp_api.runs) == 4 and len(set(kfp_api.created())) == 4  # four contents, one run each


def test_published_outputs_are_skipped_unless_asked(s3, kfp_api, capsys, tmp_path):
    client, bucket = s3
    _upload(tmp_path, bucket, "grpo-out", b"g" * 80, lineage_step="grpo")
    _, rows = _watch(capsys, bucket, kfp_api)
    assert rows["grpo-out"]["action"] == "skipped" and "--include-published" in rows["grpo-out"]["detail"]
    _, rows = _watch(capsys, bucket, kfp_api, "--include-published")
    assert rows["grpo-out"]["action"] == "submitted"


def test_bad_input_is_one_line(s3, kfp_api, capsys, tmp_path, monkeypatch):
    client, bucket = s3
    assert cli(["watch", "/local/ckpts", "--state", f"s3://{bucket}/state", "--host", kfp_api.url, "--once"]) == 2
    assert "must be an s3://" in capsys.readouterr().err
    assert cli(["watch", f"s3://{bucket}/ckpts", "--state", "/tmp/state", "--host", kfp_api.url, "--once"]) == 2
    assert "the registry lives on S3" in capsys.readouterr().err
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    monkeypatch.setenv("MEDBRIDGE_S3_ENDPOINT", f"http://127.0.0.1:{port}")
    assert cli(_args(bucket, kfp_api)) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot reach the S3 endpoint" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_a_person_approves_training_in_the_registry(s3, kfp_api, capsys, tmp_path):
    client, bucket = s3
    _upload(tmp_path, bucket, "good", b"g" * 90)
    _, rows = _watch(capsys, bucket, kfp_api)
    sha = rows["good"]["sha256"]
    ref = f"s3://{bucket}/ckpts/good"
    registry = f"s3://{bucket}/state"
    assert watch.entry_for_training(registry, ref)["sha256"] == sha
    line = watch.record_training(registry, ref, "train-run-1")
    assert "train-run-1" in line and _entry(client, bucket, sha)["training"][0]["run_id"] == "train-run-1"
    with pytest.raises(ValueError, match="not in the checkpoint registry"):
        watch.entry_for_training(registry, f"s3://{bucket}/ckpts/never-seen")
    images = ["--image-registry", "registry.example/ml", "--image-tag", "0.1.0"]  # not the placeholder registry
    assert cli(["submit", "--host", kfp_api.url, "--model-ref", f"s3://{bucket}/ckpts/never-seen", "--train",
                "--registry", registry, "--no-gpu", *images]) == 2
    assert "not in the checkpoint registry" in capsys.readouterr().err
    assert cli(["submit", "--host", kfp_api.url, "--model-ref", ref, "--train", "--no-gpu", *images]) == 2
    assert "--registry" in capsys.readouterr().err
    # The person's approval: the full pipeline is submitted (to a server speaking the whole v2beta1 submit API,
    # tests/kfp_api_server.py) and its run recorded in the checkpoint's entry.
    server = FakeKFP().start()
    try:
        assert cli(["submit", "--host", server.url, "--model-ref", ref, "--train", "--registry", registry,
                    "--no-gpu", *images]) == 0
        (train_run,) = server.runs.values()
    finally:
        server.stop()
    assert [t["run_id"] for t in _entry(client, bucket, sha)["training"]] == ["train-run-1", train_run["run_id"]]


# ---- the CronJob's script, end to end ----------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/usr/bin/kubectl").exists() and not any(
    (Path(p) / "kubectl").exists() for p in os.environ.get("PATH", "").split(os.pathsep)), reason="kubectl not on PATH")
def test_cronjob_script_runs_the_watcher(s3, kfp_api, tmp_path):
    """The rendered CronJob's shell script, run as written, with `medbridge` meaning this checkout's CLI."""
    import yaml

    client, bucket = s3
    rendered = subprocess.run(["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / "prod")], capture_output=True,
                              text=True, timeout=60, check=True).stdout
    objs = [d for d in yaml.safe_load_all(rendered) if d]
    cron = next(o for o in objs if o["kind"] == "CronJob" and o["metadata"]["name"] == "medbridge-rediagnose")
    config = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "medbridge-config")["data"]
    script = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][0]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "medbridge").write_text(f'#!/bin/sh\nexec {sys.executable} -m pipelines.cli "$@"\n')
    (bindir / "medbridge").chmod(0o755)
    for i in range(3):
        _upload(tmp_path, bucket, f"step-{i}00", f"w{i}".encode() * 50)
    env = {**_env(_s3_env()), **config, "PATH": f"{bindir}:{os.environ['PATH']}", "KFP_HOST": kfp_api.url,
           "MEDBRIDGE_S3_ENDPOINT": os.environ["MEDBRIDGE_S3_ENDPOINT"],
           "MEDBRIDGE_CHECKPOINTS_URI": f"s3://{bucket}/ckpts", "MEDBRIDGE_STATE_URI": f"s3://{bucket}/state",
           "MEDBRIDGE_SUBMIT_LIMIT": "2", "MEDBRIDGE_SUBMIT_ARGS": "--no-gpu"}

    def run():
        proc = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    out = run()
    actions = [line.split()[0] for line in out.splitlines()]
    assert sorted(actions) == ["deferred", "submitted", "submitted"] and len(kfp_api.runs) == 2  # --limit 2 per hour
    run()
    assert len(kfp_api.runs) == 3  # the deferred one, next hour
    run()
    assert len(kfp_api.runs) == 3  # nothing new: nothing submitted


def test_success_reports_a_branch_change_once(s3, kfp_api, capsys, tmp_path, monkeypatch):
    """When the watcher records a run's success, it compares the diagnosis the run published with the ones before it
    and sends the branch change to the webhook, once."""
    client, bucket = s3
    hook = Hook()
    monkeypatch.setenv("MEDBRIDGE_WEBHOOK_URL", hook.url)

    def publish(sha, branch, created):
        for name, doc in (("diagnosis.json", {"k": 8, "model_ref": f"ckpt-{branch}", "decision": {"branch": branch},
                                               "per_modality": {}}),
                          ("lineage.json", {"schema_version": 2, "created_at": created, "step": "diagnose"})):
            client.put_object(Bucket=bucket, Key=f"state/diagnoses/{sha}/diagnosis/{name}", Body=json.dumps(doc))

    try:
        publish("0" * 64, "sharpen", "2026-11-01T00:00:00+00:00")  # an earlier checkpoint's diagnosis
        _upload(tmp_path, bucket, "step-2", b"new" * 40)
        _, rows = _watch(capsys, bucket, kfp_api)
        sha = rows["step-2"]["sha256"]
        publish(sha, "bridge", "2026-11-02T00:00:00+00:00")  # what the run publishes
        kfp_api.set_state(watch.run_name(sha, 1), "SUCCEEDED")
        _watch(capsys, bucket, kfp_api)
        _watch(capsys, bucket, kfp_api)
        assert [(h["event"], h["from"], h["to"]) for h in hook.received] == [("branch_changed", "sharpen", "bridge")]
        assert "token" not in capsys.readouterr().err  # the webhook URL is never printed
    finally:
        hook.close()
