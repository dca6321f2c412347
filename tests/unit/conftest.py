"""Fixtures for the sft / grpo unit tests: a small synthetic MCQ dataset in the real dataset-dir format."""

from __future__ import annotations

import json

import pytest

TASKS = (("pneumoniamnist", "X-ray", "radiology"), ("pathmnist", "microscopy", "microscopy"),
         ("octmnist", "OCT", "visible light"))


def write_mcq_dataset(root, n_per_task: int = 4, seed: int = 0):
    """A few random 56x56 PNGs + records.jsonl (synthetic; two options, answers alternate A/B)."""
    import numpy as np
    from PIL import Image

    from components.common.records import MCQRecord, save_records

    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    recs = []
    for task, modality, group in TASKS:
        for i in range(n_per_task):
            rel = f"images/{task}_{i}.png"
            Image.fromarray(rng.integers(0, 255, (56, 56, 3), dtype=np.uint8)).save(root / rel)
            recs.append(MCQRecord(
                id=f"{task}-{i}", question="Which class does this image show?", options=["normal", "abnormal"],
                answer="AB"[i % 2], image=rel, task=task, modality=modality, split="train",
                meta={"group": group},
            ))
    save_records(root, recs)
    return root


def write_diagnosis(root, weak_tasks=(), weak_modalities=(), branch="bridge"):
    root.mkdir(parents=True, exist_ok=True)
    (root / "diagnosis.json").write_text(json.dumps({
        "k": 4, "tau": 0.5, "synthetic": True,
        "decision": {"branch": branch, "rule": "test", "forced": False, "per_modality": {},
                     "weak_tasks": list(weak_tasks), "weak_modalities": list(weak_modalities)},
    }))
    return root


@pytest.fixture(scope="session")
def mcq_dir(tmp_path_factory):
    return write_mcq_dataset(tmp_path_factory.mktemp("mcq") / "set")


@pytest.fixture(scope="session")
def bridge_diagnosis(tmp_path_factory):
    return write_diagnosis(tmp_path_factory.mktemp("diag") / "diagnosis", weak_tasks=["pneumoniamnist"],
                           weak_modalities=["microscopy"])
