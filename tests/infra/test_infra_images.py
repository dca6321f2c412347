"""Static checks of images/*.Dockerfile (no Docker engine is needed) and of images/install_deps.py."""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comment lines dropped."""
    instructions, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines, also inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        op, _, args = current.partition(" ")
        instructions.append((op.upper(), args.strip()))
        current = ""
    assert not current, f"{path}: ends inside a continued instruction"
    return instructions


def arg_defaults(instructions) -> dict[str, str]:
    out = {}
    for op, args in instructions:
        if op == "ARG":
            name, _, default = args.partition("=")
            out[name] = default.strip('"')
    return out


def env_values(instructions) -> dict[str, str]:
    out = {}
    for op, args in instructions:
        if op == "ENV":
            for token in shlex.split(args):
                name, _, value = token.partition("=")
                out[name] = value
    return out


def run_commands(instructions) -> list[str]:
    """Every shell command of every RUN, split on && / ; so each command can be checked on its own."""
    return [c.strip() for op, args in instructions if op == "RUN" for c in re.split(r"&&|;", args) if c.strip()]


def image_names() -> set[str]:
    """The image names components/common/images.py builds its constants from (medbridge-cpu, ...)."""
    text = (ROOT / "components" / "common" / "images.py").read_text()
    return set(re.findall(r'_IMAGE = f"\{REGISTRY\}/([a-z0-9-]+):\{TAG\}"', text))


def dockerfile_for(image: str) -> Path:
    return IMAGES / f"{image.removeprefix('medbridge-')}.Dockerfile"


DOCKERFILES = sorted(IMAGES.glob("*.Dockerfile"))
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_every_image_in_images_py_has_a_dockerfile_and_back():
    names = image_names()
    assert names == {"medbridge-cpu", "medbridge-train", "medbridge-serve"}  # the parser found all three
    assert {dockerfile_for(n) for n in names} == set(DOCKERFILES)  # no image without a Dockerfile, no orphan


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_installs_the_project_safely(path):
    ins = parse_dockerfile(path)
    ops = [op for op, _ in ins]
    args, env = arg_defaults(ins), env_values(ins)

    # A base image, with an explicit tag that is not 'latest'.
    assert "FROM" in ops
    base = next(a for op, a in ins if op == "FROM")
    base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
    assert ":" in base and not base.endswith(":latest"), f"{path.name}: pin the base image tag ({base})"

    # torch first, from the index given as a build arg; every later install obeys the image's constraints file
    # (images/constraints/<image>.txt, copied in before the first install_deps.py call).
    image = path.name.removesuffix(".Dockerfile")
    cmds = run_commands(ins)
    torch_at = next(i for i, c in enumerate(cmds) if re.search(r"pip install .*torch==", c))
    assert '--index-url "${TORCH_INDEX_URL}"' in cmds[torch_at]
    deps_at = [i for i, c in enumerate(cmds) if "images/install_deps.py" in c]
    assert deps_at and torch_at < deps_at[0], f"{path.name}: install torch before install_deps.py"
    for i in deps_at:
        assert f"--image {image}" in cmds[i]
        assert '--extras "${EXTRAS}"' in cmds[i]
    copies = [i for i, (op, a) in enumerate(ins) if op == "COPY" and a.split()[0] == "images/constraints"]
    first_deps = min(i for i, (op, a) in enumerate(ins) if op == "RUN" and "images/install_deps.py" in a)
    assert copies and copies[0] < first_deps, f"{path.name}: copy images/constraints before installing"
    # The last install_deps.py call installs the project itself, after the whole repo was copied in.
    assert "--deps-only" not in cmds[deps_at[-1]]
    copy_repo = [i for i, (op, a) in enumerate(ins) if op == "COPY" and a.split()[0] == "."]
    last_deps_run = max(i for i, (op, a) in enumerate(ins) if op == "RUN" and "images/install_deps.py" in a)
    assert copy_repo and copy_repo[0] < last_deps_run

    # No pip call may resolve medmnist's torchvision requirement (it swaps torch for a CUDA build).
    for c in cmds:
        if re.search(r"pip install", c):
            assert "torchvision" not in c
            assert "medmnist" not in c or "--no-deps" in c, f"{path.name}: {c}"

    # Lineage, cache and offline settings.
    assert "CODE_VERSION" in args and env["MEDBRIDGE_CODE_VERSION"] == "${CODE_VERSION}"
    volumes = [a for op, a in ins if op == "VOLUME"]
    assert volumes == ['["/cache"]']
    assert env["MEDBRIDGE_CACHE"] == "/cache" and env["HF_HOME"].startswith("/cache/")
    assert args["HF_HUB_OFFLINE"] == "0" and env["HF_HUB_OFFLINE"] == "${HF_HUB_OFFLINE}"

    # Runs as a numeric non-root uid (kubelet can only verify runAsNonRoot for a numeric USER).
    users = [a for op, a in ins if op == "USER"]
    assert users and users[-1].isdigit() and int(users[-1]) != 0, f"{path.name}: USER {users}"
    assert ops.index("USER") > max(i for i, op in enumerate(ops) if op == "RUN"), "USER must come after the last RUN"


@pytest.mark.parametrize(
    "image, required, index",
    [
        ("medbridge-cpu", set(), "/whl/cpu"),  # light profile: CPU torch, no extras
        ("medbridge-train", {"distributed", "kernels"}, "/whl/cu"),  # CUDA torch + DeepSpeed + Liger's kernels
        ("medbridge-serve", {"distributed", "serve", "kernels"}, "/whl/cu"),  # train profile + vLLM
    ],
)
def test_profiles(image, required, index):
    args = arg_defaults(parse_dockerfile(dockerfile_for(image)))
    extras = {e for e in args["EXTRAS"].split(",") if e}
    assert extras == required
    assert extras <= set(EXTRAS)  # every extra exists in pyproject.toml
    assert index in args["TORCH_INDEX_URL"]


def test_every_image_records_which_image_it_is():
    """`medbridge --version` inside an image reads MEDBRIDGE_IMAGE and the constraint files it was built with."""
    for path in DOCKERFILES:
        env = env_values(parse_dockerfile(path))
        assert env["MEDBRIDGE_IMAGE"] == f"medbridge-{path.name.removesuffix('.Dockerfile')}"
        assert env["MEDBRIDGE_CONSTRAINTS"] == "/opt/medbridge/src/images/constraints"


def test_train_and_serve_differ_only_where_intended():
    """serve.Dockerfile duplicates train.Dockerfile (vLLM pins torch, so it cannot build FROM it): keep them in step."""
    train = dict((op, a) for op, a in parse_dockerfile(dockerfile_for("medbridge-train")) if op in ("FROM", "USER", "VOLUME"))
    serve = dict((op, a) for op, a in parse_dockerfile(dockerfile_for("medbridge-serve")) if op in ("FROM", "USER", "VOLUME"))
    assert train == serve
    train_env = env_values(parse_dockerfile(dockerfile_for("medbridge-train")))
    serve_env = env_values(parse_dockerfile(dockerfile_for("medbridge-serve")))
    assert {k: v for k, v in train_env.items() if k != "MEDBRIDGE_IMAGE"} == {k: v for k, v in serve_env.items() if k != "MEDBRIDGE_IMAGE"}


def test_dockerignore_keeps_venv_git_and_secrets_out():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    for pattern in (".git", ".venv", "runs", "**/*.env"):
        assert pattern in lines


def test_cache_mount_matches_pipeline_settings():
    """The pipeline mounts the cache PVC where the images expect it (pipelines/pipeline.py ClusterSettings)."""
    import ast

    source = ROOT / "pipelines" / "pipeline.py"
    if not source.is_file():
        pytest.skip("pipelines/pipeline.py not present")
    tree = ast.parse(source.read_text())
    defaults = {
        node.target.id: ast.literal_eval(node.value)
        for cls in tree.body
        if isinstance(cls, ast.ClassDef) and cls.name == "ClusterSettings"
        for node in cls.body
        if isinstance(node, ast.AnnAssign) and node.value is not None
    }
    assert defaults.get("cache_mount") == "/cache"


# ---- images/install_deps.py ---------------------------------------------------------------------------------


@pytest.fixture
def pip_calls(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("install_deps", IMAGES / "install_deps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "check_call", lambda cmd: calls.append(cmd))
    return module, calls


def test_install_deps_keeps_medmnist_without_deps_and_applies_constraints(pip_calls):
    module, calls = pip_calls
    assert module.main(["--extras", "serve", "--constraint", "/c.txt"]) == 0
    assert len(calls) == 3  # dependencies, medmnist --no-deps, the project --no-deps
    deps, nodeps, project = calls
    assert all(c[c.index("-c") + 1] == "/c.txt" for c in calls)
    assert not any(a.startswith("medmnist") for a in deps) and "--no-deps" not in deps
    assert any(a.startswith("vllm") for a in deps)  # the extra's requirement
    assert "--no-deps" in nodeps and any(a.startswith("medmnist") for a in nodeps)
    assert "--no-deps" in project and project[-1] == str(ROOT)


def test_install_deps_deps_only_skips_the_project(pip_calls):
    module, calls = pip_calls
    assert module.main(["--deps-only", "--extras", ""]) == 0
    assert len(calls) == 2 and str(ROOT) not in calls[0] + calls[1]
    assert "-c" not in calls[0]  # no constraint file given, none passed


def test_install_deps_image_applies_its_constraints_and_checks_torch(pip_calls, tmp_path, monkeypatch):
    module, calls = pip_calls
    folder = tmp_path / "constraints"
    folder.mkdir()
    monkeypatch.setattr(module, "CONSTRAINTS", folder)
    from importlib.metadata import version

    installed = version("torch").split("+")[0]
    (folder / "cpu.txt").write_text(f"# header\ntorch=={installed}\nnumpy==2.0.0\n")
    assert module.main(["--image", "cpu", "--deps-only"]) == 0
    assert all(c[c.index("-c") + 1] == str(folder / "cpu.txt") for c in calls)
    (folder / "cpu.txt").write_text("torch==0.0.1\n")  # the image installed another torch than its file pins
    with pytest.raises(SystemExit, match="pins torch==0.0.1"):
        module.main(["--image", "cpu", "--deps-only"])


def test_install_deps_unknown_extra(pip_calls):
    module, calls = pip_calls
    with pytest.raises(SystemExit, match="unknown extra 'gpu'"):
        module.main(["--extras", "gpu"])
    assert calls == []


def test_readme_says_which_step_runs_on_which_image():
    """images/README.md's table lists each step in the row of the image its component.py uses."""
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r"^\| `(medbridge-[a-z]+)` \|.*$", (IMAGES / "README.md").read_text(), re.M)
    }
    constants = {"CPU_IMAGE": "medbridge-cpu", "TRAIN_IMAGE": "medbridge-train", "SERVE_IMAGE": "medbridge-serve"}
    components = sorted((ROOT / "components").glob("*/component.py"))
    if not components:
        pytest.skip("no components/<step>/component.py yet")
    for path in components:
        step = path.parent.name
        constant = re.search(r"base_image=(\w+)", path.read_text()).group(1)
        image = constants[constant]
        assert re.search(rf"\b{step}\b", rows[image].split("|")[4]), f"images/README.md: {step} runs on {image}"
