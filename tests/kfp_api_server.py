"""A Kubeflow Pipelines API server for the tests: real HTTP on a loopback port, speaking the v2beta1 REST endpoints
`kfp.Client` calls (paths and JSON bodies as in kfp_server_api, the client kfp generates from KFP's API
definitions), keeping what it is sent for the tests to assert on.

    server = FakeKFP(token="secret", multi_user=True).start()
    ... medbridge submit --host {server.url} ...
    server.requests          # [{"method", "path", "query", "headers" (lower-case names), "json" | "files"}]
    server.runs, server.recurring_runs, server.pipelines, server.versions, server.experiments
    server.created()                     # the runs' names, sorted
    server.set_state(run_name, "FAILED") # what Kubeflow would report next
    server.on_create = lambda run: ...   # called once a run is stored, before the answer is sent (a crash hook)
    server.before = lambda record: ...   # called before a request is answered (another client's request races in)

Like the real API server it answers 401 to a request without the expected bearer token (healthz is public),
refuses a run that names an unknown pipeline version or experiment, refuses a second experiment or pipeline of one
name in one namespace and a second version of one name in one pipeline (409 AlreadyExists: the backend's unique
indexes), and parses every pipeline it is sent (uploaded packages and runs' inline specs) strictly against the protos
the backend uses (`kfp.pipeline_spec`, `kfp.kubernetes`): an unknown field is a 400. Requests are answered
concurrently; the store changes under one lock, as the backend's database serialises its writes.
"""

from __future__ import annotations

import json
import threading
import uuid
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import yaml

API = "/apis/v2beta1"
NOW = "2026-11-29T00:00:00Z"


def parse_specs(pipeline: dict, platform: dict | None = None) -> None:
    """Strict parse of a pipeline spec and its platform spec as the backend does."""
    from google.protobuf import json_format
    from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s_pb2
    from kfp.pipeline_spec import pipeline_spec_pb2

    json_format.ParseDict(pipeline, pipeline_spec_pb2.PipelineSpec())
    if platform:
        json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
        for config in platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values():
            json_format.ParseDict(config, k8s_pb2.KubernetesExecutorConfig())


def parse_package(text: str) -> None:
    """Strict parse of a compiled pipeline (YAML: pipeline spec, then the platform spec)."""
    docs = [d for d in yaml.safe_load_all(text) if d]
    parse_specs(docs[0], docs[1] if len(docs) > 1 else None)


def run_specs(body: dict) -> tuple[dict | None, dict | None]:
    """(pipeline spec, platform spec) a run carries inline: kfp.Client sends the pipeline spec bare, or the two
    side by side when the pipeline has a platform spec."""
    spec = body.get("pipeline_spec")
    if spec and "pipelineInfo" not in spec and "pipeline_spec" in spec:
        return spec["pipeline_spec"], spec.get("platform_spec")
    return spec, None


def _already_exists(what: str, name: str) -> tuple[int, dict]:
    """The backend's answer to a duplicate insert (storage: IsDuplicateError -> util.NewAlreadyExistError)."""
    message = f"Failed to create a new {what}. The name {name} already exists. Please specify a new name"
    return 409, {"error": f"Already exist error: {message}", "message": message, "code": 6}


def _matches(item: dict, filter_json: str | None) -> bool:
    if not filter_json:
        return True
    for p in json.loads(filter_json).get("predicates", []):
        if p.get("operation") in ("EQUALS", 1) and item.get(p["key"]) != p.get("string_value", p.get("stringValue")):
            return False
    return True


class FakeKFP:
    def __init__(self, token: str | None = None, multi_user: bool = False):
        self.token = token
        self.multi_user = multi_user
        self.requests: list[dict] = []
        self.experiments: dict[str, dict] = {}
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, dict] = {}
        self.packages: dict[str, str] = {}  # version id -> uploaded YAML
        self.runs: dict[str, dict] = {}
        self.recurring_runs: dict[str, dict] = {}
        self.on_create = None
        self.before = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def created(self) -> list[str]:
        return sorted(r["display_name"] for r in self.runs.values())

    def set_state(self, run_name: str, state: str) -> None:
        for run in self.runs.values():
            if run["display_name"] == run_name:
                run["state"] = state

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeKFP":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                record = {"method": method, "path": url.path, "query": query,
                          "headers": {k.lower(): v for k, v in self.headers.items()}}
                ctype = self.headers.get("Content-Type", "")
                if ctype.startswith("multipart/form-data"):
                    msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + raw)
                    record["files"] = {
                        part.get_param("name", header="content-disposition"): part.get_payload(decode=True).decode()
                        for part in msg.iter_parts()
                    }
                elif raw:
                    record["json"] = json.loads(raw)
                fake.requests.append(record)
                if fake.before:
                    fake.before(record)
                if url.path != f"{API}/healthz" and fake.token is not None:
                    if self.headers.get("Authorization") != f"Bearer {fake.token}":
                        return self._send(401, {"error": "Unauthenticated: missing or wrong bearer token", "code": 16})
                try:
                    with fake._lock:
                        code, body = fake.route(method, url.path, query, record)
                    if code == 200 and method == "POST" and url.path == f"{API}/runs" and fake.on_create:
                        fake.on_create(body)
                except Exception as e:  # a malformed request: what the real server answers with InvalidArgument
                    code, body = 400, {"error": f"{type(e).__name__}: {e}", "code": 3}
                self._send(code, body)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # ---- the endpoints ---------------------------------------------------------------------------------------

    def route(self, method: str, path: str, query: dict, record: dict) -> tuple[int, dict]:
        p = path.removeprefix(API)
        if method == "GET" and p == "/healthz":
            return 200, {"multi_user": self.multi_user}
        if p == "/experiments":
            if method == "POST":
                body = record["json"]
                namespace = body.get("namespace") or ""
                if any(e["display_name"] == body["display_name"] and e["namespace"] == namespace
                       for e in self.experiments.values()):
                    return _already_exists("experiment", body["display_name"])
                exp = {"experiment_id": str(uuid.uuid4()), "display_name": body["display_name"],
                       "namespace": body.get("namespace") or "", "created_at": NOW, "storage_state": "AVAILABLE"}
                self.experiments[exp["experiment_id"]] = exp
                return 200, exp
            found = [e for e in self.experiments.values()
                     if _matches(e, query.get("filter")) and (not query.get("namespace") or e["namespace"] == query["namespace"])]
            return 200, {"experiments": found, "total_size": len(found)} if found else {}
        if method == "GET" and p.startswith("/experiments/"):
            exp = self.experiments.get(p.split("/")[2])
            return (200, exp) if exp else (404, {"error": "experiment not found", "code": 5})
        if method == "GET" and p == "/pipelines":
            found = [x for x in self.pipelines.values()
                     if _matches(x, query.get("filter")) and x["namespace"] == query.get("namespace", "")]
            return 200, {"pipelines": found, "total_size": len(found)} if found else {}
        if method == "POST" and p == "/pipelines/upload":
            parse_package(record["files"]["uploadfile"])
            if any(x["display_name"] == query["name"] and x["namespace"] == query.get("namespace", "")
                   for x in self.pipelines.values()):
                return _already_exists("pipeline", query["name"])
            pipe = {"pipeline_id": str(uuid.uuid4()), "display_name": query["name"],
                    "namespace": query.get("namespace", ""), "created_at": NOW}
            self.pipelines[pipe["pipeline_id"]] = pipe
            self._version(pipe["pipeline_id"], query["name"], record["files"]["uploadfile"])
            return 200, pipe
        if method == "POST" and p == "/pipelines/upload_version":
            if query.get("pipelineid") not in self.pipelines:
                return 404, {"error": f"pipeline {query.get('pipelineid')} not found", "code": 5}
            parse_package(record["files"]["uploadfile"])
            if any(v["pipeline_id"] == query["pipelineid"] and v["display_name"] == query["name"]
                   for v in self.versions.values()):
                return _already_exists("pipeline version", query["name"])
            return 200, self._version(query["pipelineid"], query["name"], record["files"]["uploadfile"])
        if method == "GET" and p.startswith("/pipelines/") and p.endswith("/versions"):
            pid = p.split("/")[2]
            found = [v for v in self.versions.values() if v["pipeline_id"] == pid and _matches(v, query.get("filter"))]
            return 200, {"pipeline_versions": found, "total_size": len(found)} if found else {}
        if method == "POST" and p in ("/runs", "/recurringruns"):
            body = record["json"]
            ref = body.get("pipeline_version_reference") or {}
            if body.get("pipeline_spec") is not None:
                parse_specs(*run_specs(body))
            else:
                version = self.versions.get(ref.get("pipeline_version_id"))
                if version is None or version["pipeline_id"] != ref.get("pipeline_id"):
                    return 404, {"error": f"pipeline version {ref} not found", "code": 5}
            if body.get("experiment_id") not in self.experiments:
                return 404, {"error": f"experiment {body.get('experiment_id')} not found", "code": 5}
            if p == "/runs":
                run = {**body, "run_id": str(uuid.uuid4()), "state": "PENDING", "created_at": NOW}
                self.runs[run["run_id"]] = run
                return 200, run
            job = {**body, "recurring_run_id": str(uuid.uuid4()), "status": "ENABLED", "created_at": NOW}
            self.recurring_runs[job["recurring_run_id"]] = job
            return 200, job
        if method == "GET" and p == "/runs":
            found = [r for r in self.runs.values() if _matches(r, query.get("filter"))
                     and query.get("experiment_id") in (None, r.get("experiment_id"))]
            return 200, {"runs": found, "total_size": len(found)} if found else {}
        if method == "GET" and p.startswith("/runs/"):
            run = self.runs.get(p.split("/")[2])
            return (200, run) if run else (404, {"error": "run not found", "code": 5})
        if method == "GET" and p.startswith("/recurringruns/"):
            job = self.recurring_runs.get(p.split("/")[2])
            return (200, job) if job else (404, {"error": "recurring run not found", "code": 5})
        return 404, {"error": f"{method} {path}: not an endpoint of this server", "code": 5}

    def _version(self, pipeline_id: str, name: str, package: str) -> dict:
        version = {"pipeline_id": pipeline_id, "pipeline_version_id": str(uuid.uuid4()), "display_name": name,
                   "created_at": NOW}
        self.versions[version["pipeline_version_id"]] = version
        self.packages[version["pipeline_version_id"]] = package
        return version
