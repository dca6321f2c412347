"""`medbridge k8s check OVERLAY`: render a kustomize overlay of k8s/ and refuse it while it still holds a
placeholder a cluster cannot use, naming the file to edit.

    medbridge k8s check k8s/overlays/prod

Refused: the cache PVC's placeholder storage class (a PVC of a class no cluster has stays Pending, and every
pipeline task with it), the placeholder image registry (no node can pull from it), objects that are not in one
namespace, policy objects (LimitRange, ResourceQuota) in KFP's own namespace, and, where `kubernetes-validate` is
installed, any object that fails the Kubernetes schema. Prints what the pipeline's pods will find in the
namespace and how to submit into it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from components.common.images import PLACEHOLDER_REGISTRY

PLACEHOLDER_STORAGE_CLASS = "CHANGE-ME-storage-class"
KFP_NAMESPACE = "kubeflow"
POLICY_KINDS = ("LimitRange", "ResourceQuota")
K8S_VERSION = "1.31"


def render(overlay: str | Path) -> list[dict]:
    """The overlay's objects, rendered by `kubectl kustomize` (or `kustomize build`)."""
    import yaml

    overlay = Path(overlay)
    if not (overlay / "kustomization.yaml").is_file():
        raise FileNotFoundError(f"{overlay}: no kustomization.yaml; pass an overlay directory, e.g. k8s/overlays/prod")
    if shutil.which("kubectl"):
        cmd = ["kubectl", "kustomize", str(overlay)]
    elif shutil.which("kustomize"):
        cmd = ["kustomize", "build", str(overlay)]
    else:
        raise FileNotFoundError("neither kubectl nor kustomize is on PATH: install one to render the overlay")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise ValueError(f"{' '.join(cmd)} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def files_with(root: Path, text: str) -> list[Path]:
    """The files under the overlay (first) and the k8s tree holding `text`: where to edit it."""
    own = sorted(p for p in root.rglob("*") if p.is_file() and text in p.read_text(errors="replace"))
    if own:
        return own
    tree = root.parents[1] if root.parent.name == "overlays" else root.parent
    return sorted(p for p in tree.rglob("*") if p.is_file() and text in p.read_text(errors="replace"))


def _pod_specs(objects):
    for o in objects:
        spec = o.get("spec", {})
        if o["kind"] == "CronJob":
            yield o, spec["jobTemplate"]["spec"]["template"]["spec"]
        elif o["kind"] in ("Job", "Deployment", "StatefulSet", "DaemonSet"):
            yield o, spec["template"]["spec"]


def problems(overlay: Path, objects: list[dict]) -> list[str]:
    out = []
    for pvc in (o for o in objects if o["kind"] == "PersistentVolumeClaim"):
        if pvc["spec"].get("storageClassName") == PLACEHOLDER_STORAGE_CLASS:
            where = ", ".join(str(p) for p in files_with(overlay, PLACEHOLDER_STORAGE_CLASS))
            out.append(f"PVC {pvc['metadata']['name']}: storageClassName is the placeholder {PLACEHOLDER_STORAGE_CLASS!r}; "
                       f"set a {'/'.join(pvc['spec']['accessModes'])} storage class of your cluster "
                       f"(kubectl get storageclass) in {where}")
    images = sorted({c["image"] for _, spec in _pod_specs(objects) for c in spec.get("initContainers", []) + spec["containers"]})
    config = next((o.get("data", {}) for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "medbridge-config"), {})
    if any(i.startswith(PLACEHOLDER_REGISTRY) for i in images) or config.get("MEDBRIDGE_IMAGE_REGISTRY", "").startswith(PLACEHOLDER_REGISTRY):
        where = ", ".join(str(p) for p in files_with(overlay, PLACEHOLDER_REGISTRY))
        out.append(f"images use the placeholder registry {PLACEHOLDER_REGISTRY!r}; set the registry you pushed the "
                   f"images to (`images:` and MEDBRIDGE_IMAGE_REGISTRY) in {where}")
    namespaces = {o["metadata"].get("namespace") for o in objects if o["kind"] not in ("PriorityClass", "Namespace")}
    if len(namespaces) != 1 or None in namespaces:
        out.append(f"objects are spread over namespaces {sorted(map(str, namespaces))}: set one `namespace:` in {overlay / 'kustomization.yaml'}")
    policy = [o["kind"] for o in objects if o["kind"] in POLICY_KINDS and o["metadata"].get("namespace") == KFP_NAMESPACE]
    if policy:
        out.append(f"{', '.join(policy)} would go into KFP's own namespace {KFP_NAMESPACE!r}, where they would constrain "
                   f"Kubeflow itself: drop components/policy from {overlay / 'kustomization.yaml'}")
    try:
        import kubernetes_validate
    except ImportError:
        kubernetes_validate = None
    for o in objects if kubernetes_validate else []:
        try:
            kubernetes_validate.validate(o, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            out.append(f"{o['kind']}/{o['metadata']['name']}: {e.message} at {'/'.join(map(str, e.path))}")
    return out


def check_overlay(overlay: str | Path) -> str:
    """A summary of the rendered overlay; ValueError listing every placeholder or problem, with the file to edit."""
    overlay = Path(overlay)
    objects = render(overlay)
    found = problems(overlay, objects)
    if found:
        raise ValueError(f"{overlay} is not ready: " + "; ".join(found))
    by_kind = {}
    for o in objects:
        by_kind.setdefault(o["kind"], []).append(o["metadata"]["name"])
    ns = next(o["metadata"]["namespace"] for o in objects if o["metadata"].get("namespace"))
    pvc = next(o for o in objects if o["kind"] == "PersistentVolumeClaim")
    config = next(o.get("data", {}) for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "medbridge-config")
    secrets = by_kind.get("Secret", [])
    lines = [
        f"ok: {overlay} renders {len(objects)} objects into namespace {ns}",
        f"  cache: PVC {pvc['metadata']['name']} {'/'.join(pvc['spec']['accessModes'])} "
        f"{pvc['spec']['resources']['requests']['storage']} class {pvc['spec'].get('storageClassName') or '(cluster default)'}",
        f"  images: {config.get('MEDBRIDGE_IMAGE_REGISTRY', '?')} tag {config.get('MEDBRIDGE_IMAGE_TAG', '?')}",
        "  pipeline pods will find: PVC medbridge-cache, ServiceAccount medbridge-runner, "
        + ("Secrets " + ", ".join(secrets) + " (PLACEHOLDER values: replace them for real data)" if secrets
           else f"Secrets medbridge-s3 and medbridge-hf, which you create in {ns} (k8s/README.md)"),
        "  submit into it: medbridge submit --host $KFP_HOST --service-account medbridge-runner"
        + (f" --namespace {ns}" if ns != KFP_NAMESPACE else "")
        + f" --image-registry {config.get('MEDBRIDGE_IMAGE_REGISTRY', 'REGISTRY')} --image-tag {config.get('MEDBRIDGE_IMAGE_TAG', 'TAG')}",
    ]
    return "\n".join(lines)
