"""Fixture artifacts for the evaluate tests: an eval set, curation/probe/diagnosis dirs and a trained model, each
with a lineage record chaining curate -> probe -> diagnose -> grpo, as the pipeline writes them."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from components.common.io import write_json
from components.common.lineage import write_lineage
from components.common.records import MCQRecord, save_records

EVAL_TASKS = {"organamnist": "radiology", "organcmnist": "radiology", "pathmnist": "microscopy"}


def _png(colour=(120, 30, 30), size=56) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def write_eval_set(out: Path, per_task: int = 2, answer: str = "B") -> Path:
    (out / "images").mkdir(parents=True, exist_ok=True)
    recs = []
    for task, group in EVAL_TASKS.items():
        for i in range(per_task):
            img = f"images/{task}_{i}.png"
            (out / img).write_bytes(_png((10 * i, 80, 160)))
            recs.append(
                MCQRecord(
                    id=f"{task}-{i}",
                    question=f"Which class does this {task} image show?",
                    options=["liver", "kidney", "lung"],
                    answer=answer,
                    image=img,
                    task=task,
                    modality="CT" if group == "radiology" else "microscopy",
                    split="test",
                    meta={"group": group},
                )
            )
    save_records(out, recs)
    write_lineage(
        out,
        step="curate",
        artifact="eval_set",
        params={"eval_per_class": per_task},
        summary=f"{len(recs)} eval questions",
        synthetic=True,
    )
    return out


def write_upstream(root: Path, model_dir: Path | None = None) -> dict[str, Path]:
    """curation_report, eval_set, probe_report, diagnosis (and, given a model dir, a 'grpo' model copy)."""
    eval_set = write_eval_set(root / "eval_set")
    cur = root / "curation_report"
    cur.mkdir(parents=True)
    write_json(cur / "counts.json", {"eval_set": 6, "rl_set": {"CT": 12, "MRI": 12}, "quarantined": 1})
    (cur / "counts.png").write_bytes(_png((0, 128, 0)))
    (cur / "card_eval_set.md").write_text("# Eval set card\nClass-balanced test questions.\n")
    write_lineage(
        cur,
        step="curate",
        artifact="curation_report",
        summary="curated 6 eval, 24 RL questions; 1 quarantined",
        synthetic=True,
    )

    probe = root / "probe_report"
    probe.mkdir()
    write_json(
        probe / "probe.json",
        {
            "tasks": {
                "organamnist": {
                    "name": "OrganA",
                    "group": "radiology",
                    "accuracy": 61.0,
                    "auc": None,
                    "medvit_v2": 97.3,
                    "qwen25vl_7b_probe": 85.27,
                    "perception_limited": False,
                    "n_train": 10,
                    "n_test": 10,
                }
            },
            "pooling": "mean",
            "synthetic": True,
            "rule": "perception-limited when probe accuracy < 50",
        },
    )
    (probe / "table.md").write_text("| task | probe acc | paper |\n|---|---|---|\n| OrganA | 61.0 | 85.27 |\n")
    write_lineage(
        probe, step="probe", artifact="probe_report", inputs={"eval_set": eval_set}, summary="probe: OrganA 61.0"
    )

    dia = root / "diagnosis"
    dia.mkdir()
    m = {
        "n": 6,
        "acc_at_1": 0.25,
        "pass_at_k": {"1": 0.3, "2": 0.55},
        "gap": 0.30,
        "ci": {"acc_at_1": [0.1, 0.4], "pass_at_k": [0.4, 0.7], "gap": [0.2, 0.4]},
        "format_failure_rate": 0.1,
        "truncation_rate": 0.05,
        "mean_distinct_answers": 1.5,
        "chance": {"acc_at_1": 1 / 3, "pass_at_k": {"1": 1 / 3, "2": 5 / 9}},
        "corrected": {"acc_at_1": -0.125, "pass_at_k": 0.1, "gap": 0.225, "k_used": {"3": 1},
                      "ci": {"acc_at_1": [-0.3, 0.1], "pass_at_k": [0.0, 0.2], "gap": [0.1, 0.3]}},
    }
    write_json(
        dia / "diagnosis.json",
        {
            "k": 2,
            "tau": 0.5,
            "prompt_format": "think",
            "sampling": {"temperature": 0.7},
            "synthetic": True,
            "chance_correction": {"ceiling": 0.5},
            "decided_on": {"set": "target", "name": "rl_diag_set (held-out PMC-VQA)", "n": 6},
            "overall": m,
            "per_task": {"organamnist": m},
            "per_modality": {"radiology": m},
            "decision": {
                "branch": "sharpen",
                "rule": "Pass@2 CI lower bound 0.40 < tau 0.50 but point 0.55 >= tau: sharpen (test rule text)",
                "forced": False,
                "per_modality": {"radiology": {"branch": "sharpen", "rule": "Pass@2 0.55 >= 0.5"}},
                "weak_tasks": [],
                "weak_modalities": [],
            },
            "perception_limited": [],
        },
    )
    (dia / "passk_curves.png").write_bytes(_png((0, 0, 200)))
    write_lineage(
        dia,
        step="diagnose",
        artifact="diagnosis",
        inputs={"diag_set": eval_set, "probe_report": probe},
        summary="sharpen: Pass@2 0.55 >= tau 0.5",
    )
    out = {"eval_set": eval_set, "curation_report": cur, "probe_report": probe, "diagnosis": dia}
    if model_dir is not None:
        model = root / "model"
        shutil.copytree(model_dir, model)
        (model / "lineage.json").unlink(missing_ok=True)
        write_lineage(
            model,
            step="grpo",
            artifact="model",
            inputs={"model_ref": model_dir, "rl_set": eval_set, "diagnosis": dia},
            summary="grpo 4 steps",
        )
        out["model"] = model
    return out


@pytest.fixture
def upstream(tmp_path):
    return write_upstream(tmp_path / "up")


@pytest.fixture
def upstream_with_model(tmp_path, tiny_model_dir):
    return write_upstream(tmp_path / "up", model_dir=tiny_model_dir)
