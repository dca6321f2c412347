"""Build, push and test MedBridge's container images with whatever builder works on this machine.

    python images/build.py detect                                   # the builder that works here, and why others not
    python images/build.py build --image cpu --registry R --tag T   # (make images REGISTRY=R TAG=T builds all three)
    python images/build.py push --image cpu --registry R --tag T
    python images/build.py image-test                               # make image-test: build + run inside the images

Builders, in order: `docker` with a running daemon, `podman` that can run a container, else `buildah` with chroot
isolation (builds and runs images without a daemon or user namespaces). One that is merely installed is not used.

Base images: when the Dockerfile's base cannot be pulled (no registry access), `--base-image` names a local base;
`python images/build.py base` makes one with Debian's mmdebstrap (Python 3.11, no registry needed) and imports it as
`localhost/py311-base:bookworm`.

Machine-specific package access is mounted read-only into the build at the same path, never baked into an image:
`--ca-bundle FILE` (the CA bundle pip's `cert` names), `--pip-config FILE` (a pip configuration file) and
`--wheel-dir DIR` (a local wheel folder pip's `find-links` names). `--torch-wheels DIR` (a folder from
`pip download torch==2.13.0 -d DIR`) becomes a local PEP 503 index mounted into the build and passed as the torch
index, so that no CUDA build of torch is fetched for the CPU image. These work with podman and buildah, which bind-mount
into `RUN`; docker's classic builder cannot, and is refused with them.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = {"cpu": "cpu.Dockerfile", "train": "train.Dockerfile", "serve": "serve.Dockerfile"}
BASE_ARG = {"cpu": "PYTHON_IMAGE", "train": "CUDA_IMAGE", "serve": "CUDA_IMAGE"}
LOCAL_BASE = "localhost/py311-base:bookworm"
PLACEHOLDER_REGISTRY = "ghcr.io/medbridge"
STORAGE = ["--storage-driver", "vfs"]  # works inside containers and without fuse-overlayfs


@dataclass
class Builder:
    name: str  # docker | podman | buildah
    reason: str = ""

    def base_cmd(self) -> list[str]:
        return [self.name, *STORAGE] if self.name in ("podman", "buildah") else [self.name]


@dataclass
class Mounts:
    ca_bundle: str | None = None
    pip_config: str | None = None
    wheel_dir: str | None = None
    torch_index: str | None = None  # a PEP 503 folder (…/simple) made by `pep503_index`

    def paths(self) -> list[str]:
        return [p for p in (self.ca_bundle, self.pip_config, self.wheel_dir, self.torch_index) if p]


@dataclass
class BuildPlan:
    image: str
    tag: str
    build_args: dict[str, str] = field(default_factory=dict)
    mounts: Mounts = field(default_factory=Mounts)


def _run(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def probe(name: str) -> tuple[bool, str]:
    """(works, why) for one builder: installed AND able to build (docker: a daemon answers; podman: a container
    runs; buildah: it can create a working container)."""
    if shutil.which(name) is None:
        return False, "not installed"
    try:
        if name == "docker":
            r = _run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=20)
            return r.returncode == 0, "daemon answers" if r.returncode == 0 else "no daemon answers"
        if name == "podman":
            r = _run(["podman", *STORAGE, "run", "--rm", "--network", "none", LOCAL_BASE, "true"], timeout=60)
            return r.returncode == 0, "runs containers" if r.returncode == 0 else f"cannot run: {_last(r.stderr)}"
        if name == "buildah":
            r = _run(["buildah", *STORAGE, "--version"], timeout=20)
            return r.returncode == 0, "builds with chroot isolation" if r.returncode == 0 else _last(r.stderr)
    except (subprocess.TimeoutExpired, OSError) as e:
        return False, f"{type(e).__name__}: {e}"
    return False, "unknown builder"


def _last(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "failed"


def choose_builder(results: dict[str, tuple[bool, str]]) -> Builder:
    """The first of docker, podman, buildah whose probe succeeded; an error naming why none works."""
    for name in ("docker", "podman", "buildah"):
        ok, why = results.get(name, (False, "not probed"))
        if ok:
            return Builder(name, why)
    detail = "; ".join(f"{n}: {results.get(n, (False, 'not probed'))[1]}" for n in ("docker", "podman", "buildah"))
    raise RuntimeError(f"no container builder works here ({detail}); install buildah (apt-get install buildah)")


def detect() -> Builder:
    return choose_builder({name: probe(name) for name in ("docker", "podman", "buildah")})


def image_ref(registry: str, image: str, tag: str) -> str:
    return f"{registry.rstrip('/')}/medbridge-{image}:{tag}"


def build_command(builder: Builder, plan: BuildPlan, context: Path = ROOT) -> list[str]:
    """The build command line for `plan` (pure; tested for every builder)."""
    if builder.name == "docker" and plan.mounts.paths():
        raise ValueError(
            "docker's classic builder cannot bind-mount the CA bundle / pip config / wheel folders into RUN; "
            "use podman or buildah for a build that needs them"
        )
    cmd = builder.base_cmd()
    cmd += ["build"] if builder.name in ("docker", "podman") else ["bud"]
    if builder.name == "buildah":
        cmd += ["--isolation", "chroot"]
    if builder.name in ("podman", "buildah"):
        cmd += ["--network", "host"]
        for p in plan.mounts.paths():
            cmd += ["-v", f"{p}:{p}:ro"]
    cmd += ["-f", str(context / "images" / IMAGES[plan.image]), "-t", plan.tag]
    for k, v in sorted(plan.build_args.items()):
        cmd += ["--build-arg", f"{k}={v}"]
    return [*cmd, str(context)]


_NORMALISE = re.compile(r"[-_.]+")


def pep503_index(wheel_dir: str | Path, out: str | Path) -> Path:
    """A PEP 503 'simple' index at `out` whose pages link the wheels of `wheel_dir` (by absolute file:// URL)."""
    wheel_dir, out = Path(wheel_dir).resolve(), Path(out)
    files = sorted(p for p in wheel_dir.iterdir() if p.suffix in (".whl",) or p.name.endswith(".tar.gz"))
    if not files:
        raise FileNotFoundError(f"{wheel_dir}: no wheels to index (pip download torch==VERSION -d {wheel_dir})")
    projects: dict[str, list[Path]] = {}
    for f in files:
        name = _NORMALISE.sub("-", f.name.split("-")[0]).lower()
        projects.setdefault(name, []).append(f)
    (out / "simple").mkdir(parents=True, exist_ok=True)
    for name, fs in projects.items():
        page = out / "simple" / name / "index.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        links = "".join(f'<a href="{html.escape(f.as_uri())}">{html.escape(f.name)}</a>\n' for f in fs)
        page.write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
    (out / "simple" / "index.html").write_text(
        "<!DOCTYPE html><html><body>\n" + "".join(f'<a href="{n}/">{n}</a>\n' for n in sorted(projects)) + "</body></html>\n"
    )
    return out / "simple"


def make_base(name: str = LOCAL_BASE, builder: Builder | None = None, suite: str = "bookworm") -> str:
    """A minimal Debian base with Python 3.11 and venv, made by mmdebstrap and imported into the builder's storage."""
    builder = builder or detect()
    if shutil.which("mmdebstrap") is None:
        raise RuntimeError("mmdebstrap is not installed (apt-get install mmdebstrap)")
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        subprocess.run(
            ["mmdebstrap", "--variant=minbase", "--include=python3,python3-venv,python-is-python3,ca-certificates",
             suite, str(rootfs)],
            check=True,
        )
        tool = "podman" if builder.name == "buildah" and shutil.which("podman") else builder.name
        subprocess.run([tool, *(STORAGE if tool != "docker" else []), "import", str(rootfs), name], check=True)
    return name


def has_image(builder: Builder, ref: str) -> bool:
    tool = builder.base_cmd()
    cmd = [*tool, "image", "inspect", ref] if builder.name != "buildah" else [*tool, "inspect", "--type", "image", ref]
    return _run(cmd).returncode == 0


def default_base(image: str) -> str:
    """The base image a Dockerfile names by default (its ARG PYTHON_IMAGE / CUDA_IMAGE)."""
    text = (ROOT / "images" / IMAGES[image]).read_text()
    m = re.search(rf"^ARG {BASE_ARG[image]}=(\S+)$", text, re.M)
    if not m:
        raise ValueError(f"images/{IMAGES[image]}: no ARG {BASE_ARG[image]}=<default base image>")
    return m.group(1)


def base_available(builder: Builder, ref: str) -> bool:
    """The base is in the builder's storage or can be pulled now (a registry that answers within a minute)."""
    if has_image(builder, ref):
        return True
    try:
        return _run([*builder.base_cmd(), "pull", ref], timeout=60).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def choose_base(builder: Builder, image: str, given: str) -> str:
    """`given`, else the Dockerfile's base when it can be pulled, else (CPU image only) the local mmdebstrap base."""
    if given:
        return given
    base = default_base(image)
    if base_available(builder, base):
        return base
    if image != "cpu":
        raise RuntimeError(
            f"the {image} image's base {base} cannot be pulled here and no local base is given: pass "
            "BASE_IMAGE=<a CUDA base from your registry> (make images) / --base-image"
        )
    if not has_image(builder, LOCAL_BASE):
        print(f"[images] {base} cannot be pulled: making the local base {LOCAL_BASE} with mmdebstrap", flush=True)
        make_base(LOCAL_BASE, builder)
    return LOCAL_BASE


def plan_from_args(args: argparse.Namespace, image: str) -> BuildPlan:
    build_args = dict(kv.split("=", 1) for kv in args.build_arg)
    build_args.setdefault("CODE_VERSION", code_version())
    if args.base_image:
        build_args[BASE_ARG[image]] = args.base_image
    mounts = Mounts(args.ca_bundle, args.pip_config, args.wheel_dir)
    if args.torch_wheels:
        index = pep503_index(args.torch_wheels, Path(args.torch_wheels).resolve() / ".index")
        mounts.torch_index = str(index.parent)
        build_args.setdefault("TORCH_INDEX_URL", index.as_uri())
    for p in mounts.paths():
        if not Path(p).exists():
            raise FileNotFoundError(f"{p}: no such file or folder to mount into the build")
    return BuildPlan(image, image_ref(args.registry, image, args.tag), build_args, mounts)


def code_version() -> str:
    try:
        sha = _run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"]).stdout.strip()
    except OSError:
        sha = ""
    return f"medbridge 0.1.0+g{sha}" if sha else "medbridge 0.1.0"


def cmd_build(args: argparse.Namespace) -> int:
    builder = detect()
    print(f"[images] builder: {builder.name} ({builder.reason})")
    images = list(IMAGES) if args.image == "all" else [args.image]
    for image in images:
        plan = plan_from_args(args, image)
        plan.build_args[BASE_ARG[image]] = choose_base(builder, image, args.base_image)
        cmd = build_command(builder, plan)
        print("[images] " + " ".join(cmd), flush=True)
        started = time.time()
        subprocess.run(cmd, check=True)
        print(f"[images] built {plan.tag} in {time.time() - started:.0f} s")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    if args.registry.rstrip("/") == PLACEHOLDER_REGISTRY:
        raise ValueError(f"REGISTRY={args.registry} is the placeholder; name the registry you push to (REGISTRY=...)")
    builder = detect()
    images = list(IMAGES) if args.image == "all" else [args.image]
    for image in images:
        ref = image_ref(args.registry, image, args.tag)
        subprocess.run([*builder.base_cmd(), "push", ref], check=True)
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    for name in ("docker", "podman", "buildah"):
        ok, why = probe(name)
        print(f"{name}: {'works' if ok else 'no'} ({why})")
    print(f"using: {detect().name}")
    return 0


def cmd_base(args: argparse.Namespace) -> int:
    print(make_base(args.name))
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python images/build.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("detect", help="print which builder works here")
    b = sub.add_parser("base", help="make a local Python 3.11 base image with mmdebstrap")
    b.add_argument("--name", default=LOCAL_BASE)
    for name in ("build", "push"):
        p = sub.add_parser(name, help=f"{name} images")
        p.add_argument("--image", default="all", choices=["all", *IMAGES])
        p.add_argument("--registry", default=os.environ.get("MEDBRIDGE_IMAGE_REGISTRY", PLACEHOLDER_REGISTRY))
        p.add_argument("--tag", default=os.environ.get("MEDBRIDGE_IMAGE_TAG", "0.1.0"))
        if name == "build":
            p.add_argument("--base-image", default="", help="base image to build on (e.g. the mmdebstrap base)")
            p.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE")
            p.add_argument("--ca-bundle", default=None, help="CA bundle to mount read-only (pip's cert)")
            p.add_argument("--pip-config", default=None, help="pip configuration file to mount read-only")
            p.add_argument("--wheel-dir", default=None, help="local wheel folder to mount read-only (pip's find-links)")
            p.add_argument("--torch-wheels", default=None, help="folder of torch wheels served as the torch index")
    t = sub.add_parser("image-test", help="build the CPU image and run the pipeline inside it (make image-test)")
    t.add_argument("--out", default=str(ROOT / "runs" / "image-test"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    handlers = {"detect": cmd_detect, "base": cmd_base, "build": cmd_build, "push": cmd_push}
    if args.command == "image-test":
        from image_test import run_image_test  # images/image_test.py, beside this file

        return run_image_test(args)
    try:
        return handlers[args.command](args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"images/build.py: error: {e}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as e:
        print(f"images/build.py: error: {' '.join(map(str, e.cmd[:4]))} … exited with status {e.returncode}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
