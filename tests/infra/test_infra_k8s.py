"""k8s/: every overlay renders with `kubectl kustomize`, every rendered object validates against the Kubernetes
1.31 schemas (kubernetes-validate, strict), and the objects agree with each other, with the images and with the
compiled pipeline's expectations. The re-diagnosis CronJob's script is run end to end in tests/pipeline/test_watch.py."""

from __future__ import annotations

import base64
import math
import re
import shlex
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
K8S_VERSION = "1.31"  # oldest Kubernetes minor MedBridge supports (CronJob timeZone is GA since 1.27)
OVERLAYS = ("dev", "standalone", "prod")
CLUSTER_SCOPED = {"Namespace", "PriorityClass"}
# Where each overlay's objects go: where KFP runs the pipeline's pods (standalone KFP: its own namespace; multi-user
# Kubeflow: the profile's namespace).
NAMESPACES = {"dev": "kubeflow", "standalone": "kubeflow", "prod": "medbridge"}
GPU = "nvidia.com/gpu"

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl (client) not on PATH: cannot render kustomize overlays")


@pytest.fixture(scope="module")
def rendered():
    """{overlay: [objects]} rendered once per module."""
    out = {}
    for overlay in OVERLAYS:
        proc = subprocess.run(
            [KUBECTL, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, f"kubectl kustomize k8s/overlays/{overlay} failed:\n{proc.stderr}"
        out[overlay] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return out


def by_kind(objects, kind):
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def pod_specs(objects):
    """(kind, name, pod spec) of every workload that carries a pod template."""
    for o in objects:
        if o["kind"] == "CronJob":
            yield o["kind"], o["metadata"]["name"], o["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif o["kind"] in ("Job", "Deployment", "StatefulSet", "DaemonSet"):
            yield o["kind"], o["metadata"]["name"], o["spec"]["template"]["spec"]
        elif o["kind"] == "Pod":
            yield o["kind"], o["metadata"]["name"], o["spec"]


def containers(objects):
    for kind, name, spec in pod_specs(objects):
        for c in spec.get("initContainers", []) + spec["containers"]:
            yield kind, name, spec, c


def image_names() -> set[str]:
    text = (ROOT / "components" / "common" / "images.py").read_text()
    return set(re.findall(r'_IMAGE = f"\{REGISTRY\}/([a-z0-9-]+):\{TAG\}"', text))


def pipeline_text() -> str:
    path = ROOT / "pipelines" / "pipeline.py"
    if not path.is_file():
        pytest.skip("pipelines/pipeline.py not present")
    return path.read_text()


# ---- rendering and schema validation ---------------------------------------------------------------------------


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_pinned_kubernetes_schema(rendered, overlay):
    import kubernetes_validate

    objects = rendered[overlay]
    assert len(objects) >= 10
    for obj in objects:
        where = f"{overlay}: {obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{where}: {e.message} at {'/'.join(map(str, e.path))}")
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in obj["metadata"], where
        else:
            assert obj["metadata"]["namespace"] == NAMESPACES[overlay], where
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "medbridge", where
    names = Counter((o["kind"], o["metadata"]["name"]) for o in objects)
    assert max(names.values()) == 1  # no object rendered twice


@needs_kubectl
def test_overlays_contain_the_expected_objects(rendered):
    expected = {
        ("ServiceAccount", "medbridge-runner"), ("Role", "medbridge-pipeline-runner"),
        ("RoleBinding", "medbridge-pipeline-runner"), ("PersistentVolumeClaim", "medbridge-cache"),
        ("ConfigMap", "medbridge-config"), ("PriorityClass", "medbridge-gpu"), ("Job", "medbridge-cache-permissions"),
        ("CronJob", "medbridge-rediagnose"), ("CronJob", "medbridge-seed-cache"),
    }
    policy = {("LimitRange", "medbridge-limits"), ("ResourceQuota", "medbridge-gpus")}
    for overlay in OVERLAYS:
        kinds = {(o["kind"], o["metadata"]["name"]) for o in rendered[overlay]}
        assert expected <= kinds, f"{overlay} lacks {expected - kinds}"
        # No Namespace object: KFP's namespace exists already, a profile namespace is created by its Profile.
        assert not any(k == "Namespace" for k, _ in kinds), overlay
        # Policy objects only in a namespace MedBridge owns, never in KFP's own.
        assert (policy <= kinds) == (NAMESPACES[overlay] != "kubeflow"), overlay
        assert (("CronJob", "medbridge-gpu-check") in kinds) == (overlay != "dev"), overlay


# ---- GPUs -----------------------------------------------------------------------------------------------------


def _gpus(container) -> tuple[int, int]:
    res = container.get("resources", {})
    return int(res.get("requests", {}).get(GPU, 0)), int(res.get("limits", {}).get(GPU, 0))


@needs_kubectl
@pytest.mark.parametrize(
    "overlay, expected",
    [
        ("dev", {}),  # CPU-only demo: nothing asks for a GPU
        ("standalone", {("medbridge-gpu-check", "gpu-check"): (1, 1)}),  # only the GPU smoke test
        ("prod", {("medbridge-gpu-check", "gpu-check"): (1, 1)}),  # only the GPU smoke test; pipeline tasks come from KFP
    ],
)
def test_gpus_are_requested_only_where_intended(rendered, overlay, expected):
    found = {(name, c["name"]): _gpus(c) for _, name, _, c in containers(rendered[overlay]) if any(_gpus(c))}
    assert found == expected
    for _, name, spec, c in containers(rendered[overlay]):
        tolerates = any(t.get("key") == GPU for t in spec.get("tolerations", []))
        if any(_gpus(c)):
            # A GPU pod must reach tainted GPU nodes, with the same placement the pipeline's GPU tasks get.
            assert tolerates and spec.get("priorityClassName") == "medbridge-gpu", name
            assert c["image"].rsplit("/", 1)[-1].startswith(("medbridge-train:", "medbridge-serve:")), name
        else:
            assert not tolerates, f"{name}: a CPU pod must not tolerate the GPU taint (it would take GPU nodes)"


@needs_kubectl
def test_gpu_quota(rendered):
    prod = by_kind(rendered["prod"], "ResourceQuota")["medbridge-gpus"]["spec"]["hard"]
    train_gpus = int(re.search(r"train_gpus: int = (\d+)", pipeline_text()).group(1))
    assert int(prod[f"requests.{GPU}"]) >= 2 * train_gpus  # room for the SFT/GRPO task of two runs


# ---- images, config, references ---------------------------------------------------------------------------------


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_pinned_and_match_the_configmap(rendered, overlay):
    config = by_kind(rendered[overlay], "ConfigMap")["medbridge-config"]["data"]
    for _, name, _, c in containers(rendered[overlay]):
        m = re.fullmatch(r"(?P<registry>.+)/(?P<name>[a-z0-9-]+)(?::(?P<tag>[\w.-]+))?(?:@sha256:[0-9a-f]{64})?", c["image"])
        assert m and m["name"] in image_names(), f"{name}: {c['image']} is not one of components/common/images.py"
        assert m["tag"] and m["tag"] != "latest" and re.fullmatch(r"\d+\.\d+\.\d+.*", m["tag"]), f"{name}: pin {c['image']}"
        # The CronJob compiles the pipeline with these: its steps must run the same release as the CronJob.
        assert (m["registry"], m["tag"]) == (config["MEDBRIDGE_IMAGE_REGISTRY"], config["MEDBRIDGE_IMAGE_TAG"]), name


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_references_resolve(rendered, overlay):
    """Every Secret / ConfigMap key, PVC, ServiceAccount and PriorityClass a pod names exists (prod: Secrets are
    created outside the repo, so their keys are checked against the template)."""
    objects = rendered[overlay]
    configmaps = {n: set(o["data"]) for n, o in by_kind(objects, "ConfigMap").items()}
    secrets = {n: set(o.get("data", {})) | set(o.get("stringData", {})) for n, o in by_kind(objects, "Secret").items()}
    if overlay != "dev":
        assert secrets == {}  # created from the site's secret manager, never rendered with placeholder values
        secrets = template_secret_keys()
    for _, name, spec, c in containers(objects):
        assert spec["serviceAccountName"] in by_kind(objects, "ServiceAccount"), name
        if "priorityClassName" in spec:
            assert spec["priorityClassName"] in by_kind(objects, "PriorityClass"), name
        for v in spec.get("volumes", []):
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in by_kind(objects, "PersistentVolumeClaim"), name
        for src in c.get("envFrom", []):
            assert src["configMapRef"]["name"] in configmaps, name
        for env in c.get("env", []):
            ref = env.get("valueFrom", {})
            if "secretKeyRef" in ref and not ref["secretKeyRef"].get("optional"):  # an optional one may be absent
                assert ref["secretKeyRef"]["key"] in secrets[ref["secretKeyRef"]["name"]], f"{name}: {env['name']}"
            if "configMapKeyRef" in ref:
                assert ref["configMapKeyRef"]["key"] in configmaps[ref["configMapKeyRef"]["name"]], f"{name}: {env['name']}"
        mounts = {m["name"] for m in c.get("volumeMounts", [])}
        assert mounts <= {v["name"] for v in spec.get("volumes", [])}, name


@needs_kubectl
def test_names_the_compiled_pipeline_relies_on_exist(rendered):
    """pipelines/pipeline.py mounts the cache PVC and maps Secret keys to env vars by name: they must exist here."""
    text = pipeline_text()
    defaults = dict(re.findall(r"^\s+(cache_pvc|s3_secret|hf_secret|gpu_toleration_key): str = \"([^\"]+)\"", text, re.M))
    assert defaults == {
        "cache_pvc": "medbridge-cache", "s3_secret": "medbridge-s3", "hf_secret": "medbridge-hf", "gpu_toleration_key": GPU,
    }
    dev = rendered["dev"]
    assert defaults["cache_pvc"] in by_kind(dev, "PersistentVolumeClaim")
    secrets = by_kind(dev, "Secret")
    for call in re.findall(r"use_secret_as_env\((.*?)\)\n", text, re.S):
        secret = {"settings.s3_secret": defaults["s3_secret"], "settings.hf_secret": defaults["hf_secret"]}[
            re.search(r"secret_name=([\w.]+)", call).group(1)
        ]
        keys = set(re.findall(r'"(\w+)": "\w+"', call))
        assert keys and keys <= set(secrets[secret]["data"]), f"{secret} lacks {keys - set(secrets[secret]['data'])}"


@needs_kubectl
def test_storage_and_limits(rendered):
    dev_pvc = by_kind(rendered["dev"], "PersistentVolumeClaim")["medbridge-cache"]["spec"]
    assert dev_pvc["accessModes"] == ["ReadWriteOnce"] and dev_pvc["resources"]["requests"]["storage"] == "20Gi"
    assert "storageClassName" not in dev_pvc  # one node: the cluster's default class
    for overlay in ("standalone", "prod"):
        pvc = by_kind(rendered[overlay], "PersistentVolumeClaim")["medbridge-cache"]["spec"]
        assert pvc["accessModes"] == ["ReadWriteMany"] and pvc["resources"]["requests"]["storage"] == "2Ti"
        # A placeholder the site must replace (medbridge k8s check refuses it), never "no class at all".
        assert pvc["storageClassName"] == "CHANGE-ME-storage-class"
    # The pipeline's largest task (sft/grpo memory request) must fit under prod's per-container ceiling.
    biggest = max(int(g) for g in re.findall(r'"(\d+)Gi"\)', pipeline_text()))
    prod_max = by_kind(rendered["prod"], "LimitRange")["medbridge-limits"]["spec"]["limits"][0]["max"]["memory"]
    assert prod_max.endswith("Gi") and int(prod_max[:-2]) >= biggest


# ---- security ---------------------------------------------------------------------------------------------------


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_role_is_least_privilege(rendered, overlay):
    objects = rendered[overlay]
    role = by_kind(objects, "Role")["medbridge-pipeline-runner"]
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        assert not {"delete", "deletecollection", "escalate", "bind", "impersonate"} & set(rule["verbs"]), rule
        if "secrets" in rule["resources"]:
            assert rule["verbs"] == ["get"] and rule.get("resourceNames"), "Secrets: get by name only, never list"
    binding = by_kind(objects, "RoleBinding")["medbridge-pipeline-runner"]
    assert binding["roleRef"]["name"] in by_kind(objects, "Role")
    assert [(s["kind"], s["name"], s["namespace"]) for s in binding["subjects"]] == [
        ("ServiceAccount", "medbridge-runner", NAMESPACES[overlay])
    ]
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    # Multi-user Kubeflow: the runner may call KFP's API in its own profile namespace (KFP's edit role), no more.
    api = {n: b for n, b in by_kind(objects, "RoleBinding").items() if b["roleRef"]["kind"] == "ClusterRole"}
    if overlay == "prod":
        assert [(b["roleRef"]["name"], b["subjects"][0]["namespace"]) for b in api.values()] == [("kubeflow-pipelines-edit", "medbridge")]
    else:
        assert api == {}


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_as_the_images_non_root_user(rendered, overlay):
    dockerfile_uid = re.findall(r"^USER (\d+)$", (ROOT / "images" / "cpu.Dockerfile").read_text(), re.M)[-1]
    for _, name, spec, c in containers(rendered[overlay]):
        if name == "medbridge-cache-permissions":
            continue  # the one root pod, checked below
        sc = spec["securityContext"]
        assert sc["runAsNonRoot"] is True and str(sc["runAsUser"]) == dockerfile_uid, name
        assert sc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], name
        assert spec["automountServiceAccountToken"] is False, name  # none of them calls the Kubernetes API
        assert "memory" in c["resources"]["limits"], name


# Patterns of real credentials; placeholders look like CHANGE-ME-...
SECRET_PATTERNS = [
    ("AWS access key id", re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")),
    ("private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b")),
]
_ASSIGNMENT = re.compile(r"(?i)\b[\w.-]*(secret|token|password|passwd|access_key|api_key)[\w.-]*\s*[:=]\s*\"?([^\s\"#]+)")


def _entropy(s: str) -> float:
    return -sum(n / len(s) * math.log2(n / len(s)) for n in Counter(s).values())


def find_secrets(text: str) -> list[str]:
    """What in `text` looks like a real credential (named patterns, or a long random-looking secret value)."""
    hits = [name for name, pattern in SECRET_PATTERNS if pattern.search(text)]
    for _, value in _ASSIGNMENT.findall(text):
        placeholder = "CHANGE-ME" in value or value.startswith(("$", "{{", "<", "/", "http://", "https://", "s3://"))
        placeholder = placeholder or re.fullmatch(r"=[\w.+!-]+", value) is not None  # a pip pin: tokenizers==0.23.3
        if not placeholder and len(value) >= 20 and _entropy(value) > 3.5:
            hits.append(f"random-looking value for a secret ({value[:4]}...)")
    return hits


@pytest.mark.parametrize(
    "text, found",
    [
        ("AWS_ACCESS_KEY_ID=" + "AKIA" + "Z7Q2" * 4, True),  # AWS key id shape
        ("HF_TOKEN=hf_" + "aB3dE5gH7jK9" * 3, True),  # Hugging Face token shape
        ("AWS_SECRET_ACCESS_KEY=" + "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "9xq2Lr8Tz", True),  # 40-char random secret
        ("-----BEGIN RSA " + "PRIVATE KEY-----", True),  # a pasted private key
        ("AWS_SECRET_ACCESS_KEY=CHANGE-ME-secret-access-key", False),  # the template's placeholder
        ("HF_TOKEN=CHANGE-ME-hf-read-token", False),  # the template's placeholder
        ("secretKeyRef: {name: medbridge-s3, key: AWS_SECRET_ACCESS_KEY}", False),  # a reference, not a value
        ("KF_PIPELINES_SA_TOKEN_PATH=/var/run/secrets/kubeflow/pipelines/token", False),  # a path
        ("tokenspeed-triton==3.9.10.post20261028", False),  # a version pin in images/constraints
    ],
)
def test_secret_scanner(text, found):
    assert bool(find_secrets(text)) == found


def test_no_real_looking_secret_in_k8s_or_images():
    files = [p for d in ("k8s", "images") for p in (ROOT / d).rglob("*") if p.is_file()]
    files.append(ROOT / ".dockerignore")
    assert any(p.name == "s3.env.example" for p in files)  # the scan covers the templates
    for path in files:
        hits = find_secrets(path.read_text(errors="replace"))
        assert not hits, f"{path.relative_to(ROOT)}: {hits}"


def template_secret_keys() -> dict[str, set[str]]:
    out = {}
    for name, file in (("medbridge-s3", "s3.env.example"), ("medbridge-hf", "hf.env.example")):
        lines = (K8S / "components" / "secrets-template" / file).read_text().splitlines()
        out[name] = {ln.split("=", 1)[0] for ln in lines if ln.strip() and not ln.startswith("#")}
    return out


@needs_kubectl
def test_dev_secrets_are_marked_placeholders(rendered):
    secrets = by_kind(rendered["dev"], "Secret")
    assert set(secrets) == {"medbridge-s3", "medbridge-hf"}
    for name, secret in secrets.items():
        assert "PLACEHOLDER" in secret["metadata"]["annotations"]["medbridge.io/template"]
        for key, value in secret["data"].items():
            plain = base64.b64decode(value).decode()
            assert plain.startswith("CHANGE-ME") or plain.startswith("http://"), f"{name}.{key}"
            assert not find_secrets(f"{key}={plain}")


# ---- the re-diagnosis schedule ----------------------------------------------------------------------------------


def _rediagnose(objects):
    cron = by_kind(objects, "CronJob")["medbridge-rediagnose"]
    return cron, cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]


def _watch_argv(script):
    cmd = re.search(r"medbridge (watch .*?)(?<!\\)\n", script, re.S).group(1).replace("\\\n", " ")
    return shlex.split(cmd)


@needs_kubectl
def test_rediagnose_cronjob_runs_the_watcher(rendered):
    cron, container = _rediagnose(rendered["prod"])
    assert cron["spec"]["concurrencyPolicy"] == "Forbid" and not cron["spec"].get("suspend", False)
    assert _rediagnose(rendered["dev"])[0]["spec"]["suspend"] is True  # the demo does not fire on its own
    assert container["image"].rsplit("/", 1)[-1].startswith("medbridge-cpu:")
    script = container["args"][0]
    argv = _watch_argv(script)
    for flag, value in (("--host", "$KFP_HOST"), ("--experiment", "$MEDBRIDGE_EXPERIMENT"), ("--profile", "cluster"),
                        ("--state", "$MEDBRIDGE_STATE_URI"), ("--limit", "$MEDBRIDGE_SUBMIT_LIMIT")):
        assert argv[argv.index(flag) + 1] == value, flag
    assert argv[1] == "$MEDBRIDGE_CHECKPOINTS_URI" and "--once" in argv
    assert "submit" not in script  # the schedule diagnoses; training is a person's decision
    # Every variable the script reads is set by the ConfigMap or the container's env.
    config = set(by_kind(rendered["prod"], "ConfigMap")["medbridge-config"]["data"])
    provided = config | {e["name"] for e in container["env"]}
    assert set(re.findall(r"\$\{?(\w+)", script)) <= provided
    webhook = next(e for e in container["env"] if e["name"] == "MEDBRIDGE_WEBHOOK_URL")
    assert webhook["valueFrom"]["secretKeyRef"]["optional"] is True  # no Secret, no webhook: the job still runs


@needs_kubectl
def test_rediagnose_watch_flags_parse_with_the_cli(rendered):
    """The flags the CronJob passes are accepted by `medbridge watch` (pipelines/watch.py)."""
    cli = pytest.importorskip("pipelines.cli", reason="pipelines/cli.py not importable")
    _, container = _rediagnose(rendered["prod"])
    config = by_kind(rendered["prod"], "ConfigMap")["medbridge-config"]["data"]
    argv = [config["MEDBRIDGE_SUBMIT_LIMIT"] if a == "$MEDBRIDGE_SUBMIT_LIMIT" else a
            for a in _watch_argv(container["args"][0]) if a != "$MEDBRIDGE_SUBMIT_ARGS"]
    try:
        args = cli.make_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"`medbridge {' '.join(argv)}` is rejected by pipelines/cli.py: the CronJob would fail every hour")
    assert args.command == "watch" and args.host == "$KFP_HOST" and args.once


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cache_volume_is_made_writable_for_the_tasks_uid(rendered, overlay):
    """KFP gives pipeline pods no fsGroup: a Job owns the volume's top directories to the images' uid:gid 1000:0
    (group-writable, setgid), as root with CHOWN and FOWNER only, and mounts the same PVC the tasks mount."""
    job = by_kind(rendered[overlay], "Job")["medbridge-cache-permissions"]
    spec = job["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    uid = re.findall(r"^USER (\d+)$", (ROOT / "images" / "cpu.Dockerfile").read_text(), re.M)[-1]
    script = c["args"][0]
    assert f"chown {uid}:0 ." in script and "chmod 2775 ." in script and "hf" in script
    assert spec["securityContext"]["runAsUser"] == 0 and spec["securityContext"]["fsGroup"] == 0
    caps = c["securityContext"]["capabilities"]
    assert caps == {"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]} and c["securityContext"]["allowPrivilegeEscalation"] is False
    assert [v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]] == ["medbridge-cache"]
    assert c["volumeMounts"][0]["mountPath"] == "/cache"
    # The same mount point the compiled pipeline uses and the images' HF_HOME lies under.
    assert re.search(r'cache_mount: str = "/cache"', pipeline_text())


def test_profile_example(tmp_path):
    """The multi-user Profile (applied before the prod overlay) names the overlay's namespace and an owner."""
    profile = yaml.safe_load((K8S / "overlays" / "prod" / "profile.yaml").read_text())
    assert (profile["apiVersion"], profile["kind"]) == ("kubeflow.org/v1", "Profile")
    assert profile["metadata"]["name"] == NAMESPACES["prod"]
    assert profile["spec"]["owner"]["kind"] == "User" and "@" in profile["spec"]["owner"]["name"]
    assert int(profile["spec"]["resourceQuotaSpec"]["hard"][f"requests.{GPU}"]) >= 8
    prod = yaml.safe_load((K8S / "overlays" / "prod" / "kustomization.yaml").read_text())
    assert "profile.yaml" not in prod["resources"]  # applied first, by itself (it creates the namespace)


@needs_kubectl
def test_k8s_check_refuses_placeholders_naming_the_file(capsys):
    from pipelines.cli import main

    assert main(["k8s", "check", str(K8S / "overlays" / "prod")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("medbridge: error:")
    assert "storageClassName is the placeholder 'CHANGE-ME-storage-class'" in err
    assert str(K8S / "overlays" / "prod" / "kustomization.yaml") in err  # the file to edit
    assert "placeholder registry 'registry.invalid/medbridge'" in err


@needs_kubectl
def test_k8s_check_passes_once_the_site_filled_the_overlay_in(tmp_path, capsys):
    from pipelines.cli import main

    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree)
    kust = tree / "overlays" / "prod" / "kustomization.yaml"
    kust.write_text(kust.read_text().replace("CHANGE-ME-storage-class", "cephfs")
                    .replace("registry.invalid/medbridge", "registry.hospital.example/ml"))
    assert main(["k8s", "check", str(tree / "overlays" / "prod")]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "namespace medbridge" in out and "class cephfs" in out and "--namespace medbridge" in out
    assert "--service-account medbridge-runner" in out


@needs_kubectl
def test_k8s_check_refuses_policy_in_kfps_namespace(tmp_path, capsys):
    from pipelines.cli import main

    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree)
    kust = tree / "overlays" / "dev" / "kustomization.yaml"
    kust.write_text(kust.read_text().replace("  - ../../components/secrets-template\n",
                                             "  - ../../components/secrets-template\n  - ../../components/policy\n"))
    assert main(["k8s", "check", str(tree / "overlays" / "dev")]) == 2
    assert "KFP's own namespace 'kubeflow'" in capsys.readouterr().err


@needs_kubectl
def test_k8s_check_dev_passes(capsys):
    from pipelines.cli import main

    assert main(["k8s", "check", str(K8S / "overlays" / "dev")]) == 0
    assert "PLACEHOLDER values" in capsys.readouterr().out  # dev's template Secrets are said to be placeholders
