"""Container images the pipeline's steps run on (built from images/, one Dockerfile per image).

Each `component.py` names its image with one of the constants below. They hold the placeholder registry unless
MEDBRIDGE_IMAGE_REGISTRY / MEDBRIDGE_IMAGE_TAG are set; a compiled pipeline is pointed at the images a site built
and pushed with `medbridge compile|submit --image-registry REGISTRY --image-tag TAG [--image-digest NAME=sha256:…]`
(pipelines/spec.py rewrites the references in the compiled spec), and `medbridge submit` refuses to send a spec
that still names the placeholder registry: no cluster can pull from it.

    references("registry.hospital.example/ml", "0.2.0", {"medbridge-train": "sha256:" + "ab" * 32})
    -> {"medbridge-cpu": "registry.hospital.example/ml/medbridge-cpu:0.2.0",
        "medbridge-train": "registry.hospital.example/ml/medbridge-train:0.2.0@sha256:abab…", ...}
"""

from __future__ import annotations

import os
import re

# `.invalid` never resolves (RFC 2606): a spec naming it cannot pull anything, and says so at a glance.
PLACEHOLDER_REGISTRY = "registry.invalid/medbridge"
DEFAULT_TAG = "0.1.0"
NAMES = ("medbridge-cpu", "medbridge-train", "medbridge-serve")

REGISTRY = os.environ.get("MEDBRIDGE_IMAGE_REGISTRY") or PLACEHOLDER_REGISTRY
TAG = os.environ.get("MEDBRIDGE_IMAGE_TAG") or DEFAULT_TAG

# Light CPU profile: input fingerprints, publishing, the `medbridge` CLI, tiny-model demos.
CPU_IMAGE = f"{REGISTRY}/medbridge-cpu:{TAG}"
# CUDA training profile: torch + transformers + trl + peft + deepspeed (curate's labeller, probe, sft, grpo).
TRAIN_IMAGE = f"{REGISTRY}/medbridge-train:{TAG}"
# Serving profile: the same library stack plus vLLM for high-throughput sampling (diagnose, evaluate).
SERVE_IMAGE = f"{REGISTRY}/medbridge-serve:{TAG}"

_REGISTRY_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_REF_RE = re.compile(r"^(?P<registry>.+)/(?P<name>medbridge-[a-z]+)(:(?P<tag>[A-Za-z0-9_.-]+))?(@(?P<digest>sha256:[0-9a-f]{64}))?$")


def is_placeholder(registry_or_ref: str) -> bool:
    return registry_or_ref.startswith(PLACEHOLDER_REGISTRY)


def image_name(ref: str) -> str | None:
    """'registry/x/medbridge-train:0.1.0@sha256:…' -> 'medbridge-train' (None for another image)."""
    m = _REF_RE.match(ref)
    return m["name"] if m and m["name"] in NAMES else None


def references(registry: str | None = None, tag: str | None = None, digests: dict[str, str] | None = None) -> dict[str, str]:
    """{image name: reference} for every MedBridge image; ValueError naming the flag for a malformed value."""
    registry = (registry or REGISTRY).rstrip("/")
    tag = tag or TAG
    digests = dict(digests or {})
    if not _REGISTRY_RE.match(registry):
        raise ValueError(f"--image-registry {registry!r} is not a registry path, e.g. registry.hospital.example/ml")
    if not _TAG_RE.match(tag):
        raise ValueError(f"--image-tag {tag!r} is not a valid image tag, e.g. 0.2.0")
    for name, digest in digests.items():
        if name not in NAMES:
            raise ValueError(f"--image-digest {name}=…: unknown image; MedBridge's images are {', '.join(NAMES)}")
        if not _DIGEST_RE.match(digest):
            raise ValueError(f"--image-digest {name}={digest}: expected sha256:<64 hex digits> (what `docker push` prints)")
    return {n: f"{registry}/{n}:{tag}" + (f"@{digests[n]}" if n in digests else "") for n in NAMES}


def parse_digests(items: list[str]) -> dict[str, str]:
    """['medbridge-train=sha256:…'] -> {'medbridge-train': 'sha256:…'}."""
    out = {}
    for item in items:
        name, sep, digest = item.partition("=")
        if not sep:
            raise ValueError(f"--image-digest {item!r}: expected NAME=sha256:…, e.g. medbridge-train=sha256:<64 hex>")
        out[name.strip()] = digest.strip()
    return out
