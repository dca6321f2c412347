"""The import rules of the code layout, read from the source with `ast` (nothing is imported):

- components/common imports no step: it is what the steps share;
- a step imports components.common and itself, never another step (what two steps share lives in common);
- only `component.py` files import kfp, and nothing under components imports pipelines/ (the logic never knows it
  runs in a pipeline);
- a `component.py` imports the launcher inside its function body only, so compiling the pipeline loads no step code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ROOT / "components"
STEPS = sorted(p.name for p in COMPONENTS.iterdir() if p.is_dir() and p.name != "common" and not p.name.startswith("_"))


def _imports(path: Path, top_level_only: bool = False) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = []
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


def _modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _step_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "components" and len(parts) > 1 else None


def test_the_steps_are_the_six_of_the_method_plus_fingerprint_and_publish():
    # The method's six, the light task that keys Kubeflow's cache by content, and the final copy out of the cluster.
    assert STEPS == ["curate", "diagnose", "evaluate", "fingerprint", "grpo", "probe", "publish", "sft"]


@pytest.mark.parametrize("path", _modules(COMPONENTS / "common"), ids=lambda p: p.name)
def test_common_imports_no_step(path):
    steps = {m for m in _imports(path) if _step_of(m) not in (None, "common")}
    assert not steps, f"{path.relative_to(ROOT)} imports step code {sorted(steps)}; move what is shared into common"


@pytest.mark.parametrize("step", STEPS)
def test_a_step_imports_only_common_and_itself(step):
    bad = {}
    for path in _modules(COMPONENTS / step):
        others = {m for m in _imports(path) if _step_of(m) not in (None, "common", step)}
        if others:
            bad[str(path.relative_to(ROOT))] = sorted(others)
    assert not bad, f"cross-step imports (share through components/common instead): {bad}"


def test_only_component_specs_import_kfp_and_nothing_imports_pipelines():
    bad = []
    for path in _modules(COMPONENTS):
        imports = _imports(path)
        if path.name != "component.py" and any(m == "kfp" or m.startswith("kfp.") for m in imports):
            bad.append(f"{path.relative_to(ROOT)} imports kfp")
        if any(m == "pipelines" or m.startswith("pipelines.") for m in imports):
            bad.append(f"{path.relative_to(ROOT)} imports pipelines")
    assert not bad, bad


@pytest.mark.parametrize("step", STEPS)
def test_component_spec_loads_its_launcher_lazily(step):
    path = COMPONENTS / step / "component.py"
    top = [m for m in _imports(path, top_level_only=True) if m.startswith("components.")]
    assert all(m == "components.common.images" for m in top), f"{path.relative_to(ROOT)} imports {top} at module level"
    assert f"components.{step}.__main__" in _imports(path), "the component calls its step's launcher"


def test_the_rule_catches_a_violation(tmp_path):
    """The checks above read real imports: a planted cross-step import is found."""
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from components.diagnose.metrics import summarise\n")
    assert _step_of(_imports(bad)[0]) == "diagnose"
