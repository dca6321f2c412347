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


@pytest.fixture(scope="session")
def warm_model_dir(tiny_model_dir, mcq_dir, tmp_path_factory):
    """The tiny model after a short answer-only SFT on mcq_dir: it writes `<answer>A</answer>` or `<answer>B</answer>`,
    so GRPO's real rewards vary within a group and the support guard has support to watch (synthetic, like its base)."""
    from components.common.records import load_records
    from components.sft.config import SFTConfig
    from components.sft.data import Selection
    from components.sft.train import fit_sft

    root = tmp_path_factory.mktemp("warm")
    cfg = SFTConfig(prompt_format="direct", max_steps=40, learning_rate=3e-3, per_device_batch_size=4, max_examples=0,
                    warmup_ratio=0.0, tune_vision=True, save_every_steps=0)
    fit_sft(cfg, str(tiny_model_dir), Selection(load_records(mcq_dir), "all records", False), mcq_dir,
            root / "model", inputs={"base_model": str(tiny_model_dir)}, checkpoint_dir=str(root / "checkpoints"))
    return root / "model"
