"""The compiled pipeline spec as a file: which images it names, and pointing it at the images a site pushed.

    text = retarget_images(Path("pipeline.yaml").read_text(), images.references("registry.hospital.example/ml", "0.2.0"))

Components name their images at import time (components/common/images.py); the registry, tag or digest a site
uses is applied to the compiled spec instead, line by line, so the rest of the file stays byte-identical to what
the kfp compiler wrote (and to the golden spec when the images are the defaults).
"""

from __future__ import annotations

import re
from pathlib import Path

from components.common import images

_IMAGE_LINE = re.compile(r"^(?P<indent>\s+image: )(?P<ref>\S+)$", re.M)


def images_in(text: str) -> set[str]:
    """Every container image reference in a compiled spec."""
    return {m["ref"] for m in _IMAGE_LINE.finditer(text)}


def retarget_images(text: str, refs: dict[str, str]) -> str:
    """`text` with each MedBridge image reference replaced by refs[name]; other images are left alone."""

    def swap(m: re.Match) -> str:
        name = images.image_name(m["ref"])
        return m["indent"] + refs[name] if name in refs else m.group(0)

    return _IMAGE_LINE.sub(swap, text)


def placeholder_images(text: str) -> list[str]:
    return sorted(ref for ref in images_in(text) if images.is_placeholder(ref))


def load_docs(path: str | Path) -> tuple[dict, dict]:
    """(pipeline spec, platform spec) of a compiled YAML file; the platform spec is {} when there is none."""
    import yaml

    docs = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]
    return docs[0], (docs[1] if len(docs) > 1 else {})
