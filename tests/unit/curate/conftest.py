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
