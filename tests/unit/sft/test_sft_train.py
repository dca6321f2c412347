"""The bridge step: proximal selection (table-driven), a 3-step SFT run through the launcher, the saved model."""

from __future__ import annotations

import json
import math

import pytest

from components.common.records import MCQRecord
from components.sft.config import SFTConfig
from components.sft.data import build_sft_rows, cap_balanced, select_proximal


def rec(i, task, modality="none", group=None, answer="A"):
    return MCQRecord(id=f"r{i}", question="q?", options=["x", "y"], answer=answer, image=None, task=task,
                     modality=modality, meta={"group": group} if group else {})


POOL = [
    rec(0, "pneumoniamnist", "X-ray", "radiology"),
    rec(1, "organamnist", "CT", "radiology"),
    rec(2, "pathmnist", "microscopy", "microscopy"),
    rec(3, "octmnist", "OCT", "visible light"),
    rec(4, "pmc-vqa", "microscopy"),  # no group: matched through its modality
]


@pytest.mark.parametrize(
    "weak_tasks, weak_mods, expected_ids, fell_back",
    [
        (["pneumoniamnist"], [], ["r0"], False),  # a weak task picks that task only
        ([], ["radiology"], ["r0", "r1"], False),  # a weak group picks every task of the group
        ([], ["microscopy"], ["r2", "r4"], False),  # a modality name matches meta.group and record.modality
        (["octmnist"], ["microscopy"], ["r2", "r3", "r4"], False),  # union of weak tasks and weak modalities
        ([], [], ["r0", "r1", "r2", "r3", "r4"], True),  # nothing weak: everything, and it says so
        (["chestmnist"], [], ["r0", "r1", "r2", "r3", "r4"], True),  # weak task absent from the pool: fall back
    ],
)
def test_select_proximal(weak_tasks, weak_mods, expected_ids, fell_back):
    sel = select_proximal(POOL, {"decision": {"weak_tasks": weak_tasks, "weak_modalities": weak_mods}})
    assert [r.id for r in sel.records] == expected_ids
    assert sel.fell_back is fell_back
    assert ("all 5 records used" in sel.reason) is fell_back


def test_select_proximal_rejects_diagnosis_without_decision():
    with pytest.raises(ValueError, match="'decision'"):
        select_proximal(POOL, {"overall": {}})


def test_cap_balanced_is_class_balanced_and_seeded():
    pool = [rec(i, t, answer=a) for i, (t, a) in enumerate([("t1", "A")] * 10 + [("t1", "B")] * 10 + [("t2", "A")] * 2)]
    capped = cap_balanced(pool, 6, seed=1)
    classes = sorted((r.task, r.answer) for r in capped)
    # 3 classes, 6 slots: two of each, although t2/A is 10x rarer than the others.
    assert classes == [("t1", "A")] * 2 + [("t1", "B")] * 2 + [("t2", "A")] * 2
    assert [r.id for r in capped] == [r.id for r in cap_balanced(pool, 6, seed=1)]
    assert len(cap_balanced(pool, 0, seed=1)) == len(pool)  # 0 = no cap


def test_sft_rows_train_only_the_completion(mcq_dir):
    from components.common.records import load_records

    rows = build_sft_rows(load_records(mcq_dir)[:1], mcq_dir, "direct")
    assert set(rows[0]) == {"prompt", "completion", "images"}
    assert rows[0]["completion"] == [{"role": "assistant", "content": "<answer>A</answer>"}]
    assert rows[0]["prompt"][0]["content"][0] == {"type": "image"}
    assert rows[0]["images"][0].size == (56, 56)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prompt_format": "free"}, "prompt_format='free'"),  # unknown prompt format
        ({"max_steps": 0}, "max_steps=0"),  # no training
        ({"learning_rate": 0.0}, "learning_rate=0.0"),  # nothing would move
        ({"max_examples": -1}, "max_examples=-1"),  # negative cap
    ],
)
def test_sft_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SFTConfig(**kwargs)


def test_sft_trains_saves_and_reopens(tiny_model_dir, mcq_dir, bridge_diagnosis, tmp_path):
    import torch

    from components.common.lineage import read_lineage
    from components.common.modeling import load_model_and_processor
    from components.sft.__main__ import main

    out = tmp_path / "sft_model"
    rc = main([
        "--model", str(tiny_model_dir), "--sft-set", str(mcq_dir), "--diagnosis", str(bridge_diagnosis),
        "--out", str(out), "--max-steps", "3", "--learning-rate", "1e-3", "--per-device-batch-size", "2",
        "--max-examples", "6", "--prompt-format", "direct", "--warmup-ratio", "0", "--lora", "false",
    ])
    assert rc == 0
    log = json.loads((out / "train_log.json").read_text())
    assert [s["step"] for s in log["steps"]] == [1, 2, 3]
    assert all(math.isfinite(s["loss"]) for s in log["steps"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["n_examples"] == 6
    # Only the weak task (pneumonia) and the weak group (microscopy) were trained on.
    assert metrics["tasks"] == ["pathmnist", "pneumoniamnist"] and metrics["fell_back_to_all_tasks"] is False
    assert metrics["params_changed_fraction"] > 0.5

    lineage = read_lineage(out)
    assert lineage["step"] == "sft" and set(lineage["inputs"]) == {"base_model", "sft_set", "diagnosis"}
    assert lineage["synthetic"] is True  # the tiny random model is marked synthetic upstream

    base, _ = load_model_and_processor(str(tiny_model_dir))
    model, processor = load_model_and_processor(str(out))
    base_sd = base.state_dict()
    assert any(not torch.equal(p, base_sd[n]) for n, p in model.state_dict().items())
    from components.common.prompts import build_messages
    from components.common.records import load_records, open_image
    from components.common.sampling import Prompt, SamplingConfig, TransformersBackend

    r = load_records(mcq_dir)[0]
    backend = TransformersBackend("", SamplingConfig(max_new_tokens=4), model=model, processor=processor)
    outs = backend.sample([Prompt(build_messages(r, "direct"), open_image(mcq_dir, r))], n=2)
    assert len(outs) == 1 and len(outs[0]) == 2 and all(isinstance(o, str) for o in outs[0])

