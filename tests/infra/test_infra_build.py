"""images/build.py: which builder is chosen, the build command each builder gets, and the local torch index pip reads.
(`make image-test` builds and runs the images for real; it is not part of the default suite.)"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "images"))

import build  # noqa: E402  (images/build.py)


@pytest.mark.parametrize(
    "results, chosen",
    [
        # a docker client without a daemon is not a builder
        ({"docker": (False, "no daemon"), "podman": (False, "cannot run"), "buildah": (True, "ok")}, "buildah"),
        ({"docker": (True, "daemon answers"), "podman": (True, "ok"), "buildah": (True, "ok")}, "docker"),
        ({"docker": (False, "not installed"), "podman": (True, "runs"), "buildah": (True, "ok")}, "podman"),
    ],
)
def test_the_first_builder_that_works_is_chosen(results, chosen):
    assert build.choose_builder(results).name == chosen


def test_no_working_builder_says_why_for_each():
    with pytest.raises(RuntimeError, match="docker: no daemon; podman: cannot run; buildah: not installed"):
        build.choose_builder({"docker": (False, "no daemon"), "podman": (False, "cannot run"),
                              "buildah": (False, "not installed")})


def test_build_commands_per_builder(tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    plan = build.BuildPlan("cpu", "r/medbridge-cpu:t", {"CODE_VERSION": "v", "PYTHON_IMAGE": "b"},
                           build.Mounts(ca_bundle=str(ca)))
    cmd = build.build_command(build.Builder("buildah"), plan)
    assert cmd[:6] == ["buildah", "--storage-driver", "vfs", "bud", "--isolation", "chroot"]
    assert ["-v", f"{ca}:{ca}:ro"] == cmd[cmd.index("-v"):cmd.index("-v") + 2]  # read-only, same path, not baked in
    assert cmd[-1] == str(ROOT) and ["-t", "r/medbridge-cpu:t"] == cmd[cmd.index("-t"):cmd.index("-t") + 2]
    assert "--build-arg" in cmd and "PYTHON_IMAGE=b" in cmd and str(ROOT / "images" / "cpu.Dockerfile") in cmd
    podman = build.build_command(build.Builder("podman"), plan)
    assert podman[:4] == ["podman", "--storage-driver", "vfs", "build"] and "--isolation" not in podman
    docker = build.build_command(build.Builder("docker"), build.BuildPlan("cpu", "t", {}, build.Mounts()))
    assert docker[:2] == ["docker", "build"] and "-v" not in docker
    with pytest.raises(ValueError, match="cannot bind-mount"):  # docker's classic builder cannot mount into RUN
        build.build_command(build.Builder("docker"), plan)


def test_every_image_names_its_base_and_the_placeholder_registry_is_not_pushed(monkeypatch):
    assert build.default_base("cpu") == "python:3.11-slim-bookworm"
    assert all(build.default_base(i).startswith("nvidia/cuda:") for i in ("train", "serve"))
    args = build.make_parser().parse_args(["push", "--registry", build.PLACEHOLDER_REGISTRY])
    with pytest.raises(ValueError, match="placeholder"):
        build.cmd_push(args)


def test_local_torch_index_is_read_by_pip(tmp_path):
    """The PEP 503 folder built from a wheel folder serves the wheel to `pip download --index-url file://...`."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    whl = wheels / "demo_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("demo_pkg/__init__.py", "")
        z.writestr("demo_pkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\n")
        z.writestr("demo_pkg-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("demo_pkg-1.0.dist-info/RECORD", "")
    index = build.pep503_index(wheels, tmp_path / "index")
    assert (index / "demo-pkg" / "index.html").is_file()
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "--isolated", "--index-url",
         index.as_uri(), "demo-pkg==1.0", "-d", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / whl.name).read_bytes() == whl.read_bytes()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no wheels to index"):
        build.pep503_index(tmp_path / "empty", tmp_path / "x")
