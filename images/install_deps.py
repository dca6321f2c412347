"""Install MedBridge's dependencies from pyproject.toml into the current Python, keeping a CPU torch CPU-only.

    python images/install_deps.py [--extras dev,serve] [--editable] [--constraint FILE] [--deps-only]
    python images/install_deps.py --image serve --extras distributed,serve,kernels   # what images/serve.Dockerfile runs

Why not plain `pip install .`: `medmnist` requires torchvision, and resolving it on a CPU-only machine replaces
the CPU torch with a multi-GB CUDA build (and PyPI's torchvision does not import beside a CPU torch). medmnist
only imports torchvision inside `download()`, which MedBridge never calls, so it is installed without its
dependencies and its light dependencies are installed explicitly. liger-kernel (the `kernels` extra) is installed
without its dependencies too: they are torch and the triton that torch's own CUDA build pins. Install torch first (the Makefile and
images/ Dockerfiles do); everything else comes from pyproject.toml, the one list of dependencies.

Images pass `--image NAME`: every install then obeys images/constraints/NAME.txt, the image's share of MedBridge's
one library stack (resolved by images/lock.py: the same torch / transformers / peft / trl in every image, vLLM's
pins satisfied), and the torch already installed must be the one pinned there, so that no dependency can
silently swap it: a conflict fails the build instead. `--deps-only` installs the
dependencies without the project, so a Docker layer holding them survives code changes.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "images" / "constraints"
NO_DEPS = {"medmnist", "liger-kernel"}  # installed with --no-deps (see module docstring)
MEDMNIST_LIGHT_DEPS = ["fire", "scikit-image", "scikit-learn", "tqdm", "pandas", "pillow", "numpy"]


def _name(req: str) -> str:
    return re.split(r"[\s<>=!~\[;]", req, maxsplit=1)[0].lower()


def requirements(extras: list[str]) -> tuple[list[str], list[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        if extra not in project["optional-dependencies"]:
            raise SystemExit(f"unknown extra {extra!r}; pyproject.toml defines {sorted(project['optional-dependencies'])}")
        reqs += project["optional-dependencies"][extra]
    normal = [r for r in reqs if _name(r) not in NO_DEPS]
    no_deps = [r for r in reqs if _name(r) in NO_DEPS]
    return normal, no_deps


def image_constraints(image: str, torch_as_installed: bool = False) -> Path:
    """images/constraints/<image>.txt, after checking that the installed torch is the one it pins. With
    `torch_as_installed` the pins hold for everything but torch, which stays as installed (a copy of the file with
    that one line changed): what a development environment, CI, or the offline image test (a CPU torch where the
    image has a CUDA build) need; never what a deployed image is built with."""
    from importlib.metadata import PackageNotFoundError, version

    path = CONSTRAINTS / f"{image}.txt"
    if not path.is_file():
        known = sorted(p.stem for p in CONSTRAINTS.glob("*.txt"))
        raise SystemExit(f"--image {image}: no {path}; images with constraints: {', '.join(known)}")
    pinned = dict(line.split("==", 1) for line in path.read_text().splitlines() if "==" in line and not line.startswith("#"))
    try:
        installed = version("torch").split("+")[0]
    except PackageNotFoundError:
        installed = None
    if torch_as_installed and installed is not None and installed != pinned.get("torch"):
        import tempfile

        print(f"[install_deps] {path.name}: every pin in force except torch, kept at the installed {installed} "
              f"(the image pins {pinned.get('torch')})", file=sys.stderr)
        text = re.sub(r"(?m)^torch==\S+$", f"torch=={installed}", path.read_text())
        copy = Path(tempfile.mkdtemp(prefix="medbridge-constraints-")) / path.name
        copy.write_text(text)
        return copy
    if installed is not None and installed != pinned.get("torch"):
        raise SystemExit(
            f"torch {installed} is installed but {path} pins torch=={pinned.get('torch')}: "
            "build with --build-arg TORCH_VERSION equal to the pin (images/constraints/stack.in)"
        )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--extras", default="", help="comma-separated extras from pyproject.toml, e.g. dev,serve")
    parser.add_argument("--editable", action="store_true", help="install the project itself in editable mode")
    parser.add_argument(
        "--constraint", action="append", default=[], metavar="FILE",
        help="pip constraints file applied to every install (repeatable), e.g. one pinning the installed torch",
    )
    parser.add_argument("--deps-only", action="store_true", help="install the dependencies, not the project itself")
    parser.add_argument("--image", default=None, choices=("cpu", "train", "serve"),
                        help="apply images/constraints/IMAGE.txt (the image's pinned library stack)")
    parser.add_argument("--torch-as-installed", action="store_true",
                        help="with --image: every pin but torch's, which stays as installed (development, CI, the "
                             "offline image test); never for a deployed image")
    parser.add_argument("--dry-run", action="store_true", help="resolve only (pip install --dry-run); install nothing")
    args = parser.parse_args(argv)
    if args.image and args.dry_run:  # resolving what the image installs: torch at its pin, whatever is installed here
        args.constraint = [str(CONSTRAINTS / f"{args.image}.txt"), *args.constraint]
    elif args.image:
        args.constraint = [str(image_constraints(args.image, args.torch_as_installed)), *args.constraint]
    normal, no_deps = requirements([e.strip() for e in args.extras.split(",") if e.strip()])
    pip = [sys.executable, "-m", "pip", "install", "--quiet", *(a for c in args.constraint for a in ("-c", c))]
    if args.dry_run:  # what the image would install, resolved against its constraints; nothing is downloaded whole
        subprocess.check_call([*pip, "--dry-run", "--ignore-installed", "--use-feature=fast-deps", *normal,
                               *MEDMNIST_LIGHT_DEPS])
        return 0
    subprocess.check_call([*pip, *normal, *MEDMNIST_LIGHT_DEPS])
    subprocess.check_call([*pip, "--no-deps", *no_deps])
    if not args.deps_only:
        subprocess.check_call([*pip, "--no-deps", *(["-e"] if args.editable else []), str(ROOT)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
