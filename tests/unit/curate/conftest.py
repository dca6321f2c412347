"""Fixtures for the curate tests: synthetic MedMNIST (all twelve 2D tasks) and PMC-VQA in the real formats."""

from __future__ import annotations

import pytest

from components.common.medmnist_tasks import TASKS


@pytest.fixture(scope="session")
def medmnist_all(tmp_path_factory):
    from components.curate.synthetic import write_synthetic_medmnist

    return write_synthetic_medmnist(
        tmp_path_factory.mktemp("medmnist"), list(TASKS), n_per_class={"train": 3, "val": 3, "test": 2}, seed=0
    )


@pytest.fixture(scope="session")
def pmc_root(tmp_path_factory):
    from components.curate.synthetic import write_synthetic_pmc_vqa

    return write_synthetic_pmc_vqa(tmp_path_factory.mktemp("pmc"), n=40, seed=0)


@pytest.fixture(scope="session")
def ragged_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with an image processor that keeps image sizes between 56² and 168² pixels (the checkpoint's
    own fixes 56²): images of different sizes then get different patch grids, one to four attention windows."""
    import json
    import shutil

    out = tmp_path_factory.mktemp("models") / "tiny-ragged"
    shutil.copytree(tiny_model_dir, out)
    cfg_path = out / "preprocessor_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["size"] = {"shortest_edge": 56 * 56, "longest_edge": 168 * 168}
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return out


@pytest.fixture(scope="session")
def ragged_pmc_root(tmp_path_factory):
    """Synthetic PMC-VQA (24 questions) whose figures have different sizes and aspect ratios, 30 to 400 px a side."""
    import numpy as np
    from PIL import Image

    from components.curate.synthetic import write_synthetic_pmc_vqa

    root = write_synthetic_pmc_vqa(tmp_path_factory.mktemp("pmc-ragged"), n=24, seed=1)
    rng = np.random.default_rng(1)
    for i, path in enumerate(sorted((root / "images").glob("*.jpg"))):
        w, h = (int(v) for v in rng.integers(30, 400, size=2))
        if i % 6 == 0:
            w, h = 168, 168  # some figures share a grid (equal attention segments need no padding)
        with Image.open(path) as im:
            im.convert("RGB").resize((w, h)).save(path, format="JPEG", quality=90)
    return root
