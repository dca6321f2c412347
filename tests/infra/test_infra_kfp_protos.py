"""The compiled pipeline spec and its Kubernetes platform spec parse strictly (no unknown field) against the protos
of the oldest Kubeflow Pipelines release MedBridge supports and of the newest one, each in its own throwaway
virtual environment holding only that release's `kfp-pipeline-spec` and `kfp-kubernetes` (+ protobuf).

Oldest supported: KFP 2.5.0 (2.4.0's driver rejects the kfp-kubernetes settings the spec uses): kfp-kubernetes
1.5.0 (built from the 2.5.0 tag) and kfp-pipeline-spec 0.6.0 (what the SDK of that release, kfp 2.13.0, pins; the
backend's own copy is a superset). The environments are created once and cached under
$MEDBRIDGE_CACHE/kfp-protos (default ~/.cache/medbridge/kfp-protos); creating one takes ~10 s with PyPI reachable.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).parent
CHECKER = HERE / "kfp_proto_check.py"
RELEASES = {
    # Oldest supported backend: what KFP 2.5.0 parses.
    "kfp-2.5": ["kfp-pipeline-spec==0.6.0", "googleapis-common-protos<2", "protobuf<5", "--no-deps kfp-kubernetes==1.5.0"],
    # Newest release on PyPI when this was written.
    "kfp-2.17": ["kfp-pipeline-spec==2.17.3", "googleapis-common-protos", "--no-deps kfp-kubernetes==2.17.3"],
}


def _cache_root() -> Path:
    return Path(os.environ.get("MEDBRIDGE_CACHE") or Path.home() / ".cache" / "medbridge") / "kfp-protos"


def proto_env(release: str) -> Path:
    """The python of a cached virtual environment holding `release`'s protos (created on first use, under a lock)."""
    from filelock import FileLock

    reqs = RELEASES[release]
    key = hashlib.sha256(json.dumps(reqs).encode()).hexdigest()[:10]
    root = _cache_root() / f"{release}-{key}"
    python = root / "bin" / "python"
    ready = root / ".ready"
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock", timeout=600):
        if not ready.is_file():
            venv.EnvBuilder(clear=True, with_pip=True).create(root)
            plain = [r for r in reqs if not r.startswith("--no-deps ")]
            nodeps = [r.split()[1] for r in reqs if r.startswith("--no-deps ")]
            for args in (plain, ["--no-deps", *nodeps]):
                proc = subprocess.run([str(python), "-m", "pip", "install", "--quiet", *args],
                                      capture_output=True, text=True, timeout=600)
                assert proc.returncode == 0, f"pip install {' '.join(args)} for {release} failed:\n{proc.stderr[-3000:]}"
            ready.write_text(" ".join(reqs))
    return python


def check(release: str, docs: tuple[dict, dict]) -> str:
    payload = json.dumps({"pipeline_spec": docs[0], "platform_spec": docs[1]})
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}  # only the release's protos
    proc = subprocess.run([str(proto_env(release)), "-I", str(CHECKER)], input=payload, capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.stdout.strip(), proc.stderr
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    from pipelines.params import load_profile
    from pipelines.pipeline import ClusterSettings, compile_pipeline

    out = tmp_path_factory.mktemp("spec") / "pipeline.yaml"
    compile_pipeline(str(out), load_profile("cluster"), ClusterSettings())
    docs = [d for d in yaml.safe_load_all(out.read_text()) if d]
    assert len(docs) == 2, "the cluster spec carries a Kubernetes platform spec"
    return docs[0], docs[1]


@pytest.mark.parametrize("release", list(RELEASES))
def test_compiled_spec_parses_strictly(compiled, release):
    assert check(release, compiled) == "OK"


@pytest.mark.parametrize("release", list(RELEASES))
def test_an_unknown_field_is_caught(compiled, release):
    """The check can fail: a field no release knows, in the pipeline spec and in one executor's platform config."""
    spec, platform = copy.deepcopy(compiled)
    spec["root"]["dag"]["tasks"]["curate"]["notAField"] = 1
    assert "notAField" in check(release, (spec, compiled[1]))
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    next(iter(executors.values()))["notAField"] = 1
    assert "notAField" in check(release, (compiled[0], platform))


def test_the_oldest_environment_really_is_older(compiled):
    """A setting newer than KFP 2.5 (a pod security context, added to kfp-kubernetes later) parses in the newest
    release and is refused by the oldest: the two environments hold different protos."""
    spec, platform = copy.deepcopy(compiled)
    next(iter(platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values()))["securityContext"] = {"runAsUser": 1000}
    assert check("kfp-2.17", (spec, platform)) == "OK"
    assert "securityContext" in check("kfp-2.5", (spec, platform))


def test_installed_sdk_is_the_pinned_one():
    """pyproject.toml pins the SDK pair whose output the oldest backend parses; the golden spec is compiled with it."""
    import tomllib
    from importlib.metadata import version

    deps = tomllib.loads((HERE.parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {d.split("==")[0]: d.split("==")[1] for d in deps if d.startswith("kfp")}
    assert pins == {"kfp": version("kfp"), "kfp-kubernetes": version("kfp-kubernetes")}, f"installed differ from {pins}"
    assert sys.version_info >= (3, 11)
