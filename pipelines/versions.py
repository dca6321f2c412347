"""What `medbridge --version` prints: the code version, the library stack pinned for the images
(images/constraints/*.txt, resolved by images/lock.py) beside what is installed here, the images a compiled
pipeline names, and the oldest Kubeflow Pipelines backend the compiled spec is tested against.

    medbridge --version
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from components.common import images

ROOT = Path(__file__).resolve().parents[1]
MIN_KFP_BACKEND = "2.5"  # 2.4's driver rejects the kfp-kubernetes settings (tests/infra/test_infra_kfp_protos.py)
# The libraries whose versions decide what a model checkpoint is and how it is read, in the order shown.
STACK = ("torch", "transformers", "peft", "trl", "accelerate", "datasets", "safetensors", "tokenizers", "vllm",
         "deepspeed", "kfp", "kfp-kubernetes", "kfp-pipeline-spec", "boto3", "great-expectations")
IMAGES = ("cpu", "train", "serve")


def constraints_dir() -> Path:
    """Where the constraint files are: $MEDBRIDGE_CONSTRAINTS (set in the images), else the checkout's images/."""
    return Path(os.environ.get("MEDBRIDGE_CONSTRAINTS") or ROOT / "images" / "constraints")


def read_pins(path: Path) -> dict[str, str]:
    """{normalised name: version} of a constraints file's `name==version` lines."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[re.sub(r"[-_.]+", "-", name.strip()).lower()] = version.strip()
    return out


def pinned() -> dict[str, dict[str, str]]:
    """{image: pins} for the images whose constraint file is present."""
    folder = constraints_dir()
    return {img: read_pins(folder / f"{img}.txt") for img in IMAGES if (folder / f"{img}.txt").is_file()}


def installed(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def report() -> str:
    from components.common.lineage import code_version
    from components.common.markdown import md_table

    pins = pinned()
    here = os.environ.get("MEDBRIDGE_IMAGE", "")
    lines = [
        code_version(),
        f"Kubeflow Pipelines backend >= {MIN_KFP_BACKEND} (the compiled spec is checked against its protos)",
        f"running in: {here or 'a local environment (not a MedBridge image)'}",
        "",
    ]
    rows = []
    for name in STACK:
        have = installed(name)
        row = [name, have or "-"]
        for img in IMAGES:
            want = pins.get(img, {}).get(name)
            row.append(want or "-")
        own = pins.get(here.removeprefix("medbridge-"), {}).get(name) if here else None
        note = ""
        if have and own and have.split("+")[0] != own:
            note = f"differs from this image's pin {own}"
        elif have and not here and any(p.get(name) for p in pins.values()):
            want = {p[name] for p in pins.values() if name in p}
            if have.split("+")[0] not in want:
                note = f"differs from the images' {'/'.join(sorted(want))}"
        rows.append(row + [note])
    lines.append(md_table(["library", "installed here", *(f"medbridge-{i} pin" for i in IMAGES), "note"], rows))
    if not pins:
        lines.append(f"(no constraint files found under {constraints_dir()})")
    refs = images.references()
    placeholder = " (placeholder registry: pass --image-registry to compile/submit)" if images.is_placeholder(images.REGISTRY) else ""
    lines += ["", f"images a compiled pipeline names{placeholder}:"] + [f"  {ref}" for ref in refs.values()]
    return "\n".join(lines)
