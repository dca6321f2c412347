"""The bridge step: proximal selection (table-driven), targets that follow the prompt format (answer-only, or teacher
rationales: extracted table-driven, cached and resumable), a 3-step SFT run through the launcher, the saved model."""

from __future__ import annotations

import dataclasses
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


def test_sft_rows_follow_the_prompt_format(mcq_dir):
    from components.common.records import load_records

    recs = load_records(mcq_dir)[:3]
    rationales = {recs[0].id: "The opacity points to the second option.", recs[1].id: None}  # recs[1]: rejected
    rows = build_sft_rows(recs, mcq_dir, "think", rationales)
    # Only records with a rationale train; the target is the rationale in <think>, then the letter.
    assert len(rows) == 1
    assert rows[0]["completion"][0]["content"] == (
        f"<think>The opacity points to the second option.</think><answer>{recs[0].answer}</answer>"
    )
    assert "Think step by step" in rows[0]["prompt"][0]["content"][1]["text"]  # the think prompt, as GRPO will use


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prompt_format": "free"}, "prompt_format='free'"),  # unknown prompt format
        ({"max_steps": -1}, "max_steps=-1"),  # 0 derives the steps; negatives mean nothing
        ({"learning_rate": -1.0}, "learning_rate=-1.0"),  # 0 is the default for the mode, negatives mean nothing
        ({"max_examples": -1}, "max_examples=-1"),  # negative cap
        ({"rationales": "oracle"}, "rationales='oracle'"),  # unknown target source
        ({"lora": True, "deepspeed": True}, "lora=True and deepspeed=True conflict"),  # LoRA + ZeRO-3
        ({"offload_optimizer": True}, "offload_optimizer=True needs deepspeed=True"),
        ({"epochs": 0.0}, "epochs=0.0"),
    ],
)
def test_sft_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SFTConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, n, n_proc, steps, rule",
    [
        ({"max_steps": 9}, 1000, 4, 9, "set by the recipe"),
        ({}, 1000, 4, 63, "1 epoch(s) over 1000 examples at 16 examples per step"),  # ceil(1000 / (4 x 4 x 1))
        ({"gradient_accumulation_steps": 4}, 20000, 4, 313, "64 examples per step"),  # the cluster recipe's batch
        ({"epochs": 2.0}, 10, 1, 6, "2 epoch(s)"),  # ceil(10 / 4) = 3 per epoch
    ],
)
def test_sft_max_steps(kwargs, n, n_proc, steps, rule):
    from components.sft.train import sft_max_steps

    got, why = sft_max_steps(SFTConfig(**kwargs), n, n_proc)
    assert got == steps and rule in why


# Fields of SFTConfig that do not reach TRL's SFTConfig, and who reads each of them instead.
NOT_TRL = {
    "prompt_format": "prompts and targets (build_sft_rows)", "max_steps": "sft_max_steps", "epochs": "sft_max_steps",
    "max_examples": "cap_balanced", "rationales": "targets", "teacher_max_new_tokens": "write_rationales",
    "teacher_batch_size": "write_rationales", "lora_r": "peft LoraConfig", "lora_alpha": "peft LoraConfig",
    "lora_dropout": "peft LoraConfig", "lora_target_modules": "peft LoraConfig",
    "tune_vision": "freeze_vision / lora_targets", "max_pixels": "load_model_and_processor",
    "keep_checkpoints": "fit_sft's clean-up", "num_processes": "components.common.launch",
    "gradient_checkpointing": "TRL's gradient_checkpointing on CUDA only (these arguments are CPU's; test_sft_speed)",
}


def test_every_setting_reaches_trl_or_a_named_consumer():
    from components.sft.train import sft_trainer_args

    def trl(c):
        return sft_trainer_args(c, max_steps=10, on_cuda=False, output_dir="/tmp/x")

    def changed(name):
        v = getattr(SFTConfig(), name)
        if isinstance(v, bool):
            return {name: not v, **({"deepspeed": True} if name == "offload_optimizer" else {})}
        if isinstance(v, int):
            return {name: v + 2}
        if isinstance(v, float):
            return {name: round(v * 0.5 + 0.25, 6)}
        return {name: {"prompt_format": "direct", "rationales": "template"}.get(name, v + "x")}

    reaching = set()
    for f in dataclasses.fields(SFTConfig):
        kw = changed(f.name)
        base = SFTConfig(**{k: v for k, v in kw.items() if k != f.name})
        if trl(SFTConfig(**kw)) != trl(base):
            reaching.add(f.name)
    assert not reaching & set(NOT_TRL), "a field listed as read elsewhere reaches TRL: update NOT_TRL"
    assert reaching | set(NOT_TRL) == {f.name for f in dataclasses.fields(SFTConfig)}


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
    assert metrics["targets"]["source"] == "none (answer-only targets)" and metrics["learning_rate"] == 1e-3
    # Only the weak task (pneumonia) and the weak group (microscopy) were trained on.
    assert metrics["tasks"] == ["pathmnist", "pneumoniamnist"] and metrics["fell_back_to_all_tasks"] is False
    assert 0.2 < metrics["params_changed_fraction"] < 1.0  # the language model moved, the vision tower did not
    assert all("step_seconds" in s for s in log["steps"])

    lineage = read_lineage(out)
    assert lineage["step"] == "sft" and set(lineage["inputs"]) == {"base_model", "sft_set", "diagnosis"}
    assert lineage["synthetic"] is True  # the tiny random model is marked synthetic upstream

    base, _ = load_model_and_processor(str(tiny_model_dir))
    model, processor = load_model_and_processor(str(out))
    base_sd = base.state_dict()
    changed = {n for n, p in model.state_dict().items() if not torch.equal(p, base_sd[n])}
    assert changed and not any(".visual." in f".{n}" for n in changed)  # tune_vision is off: the ViT stays as probed
    from components.common.prompts import build_messages
    from components.common.records import load_records, open_image
    from components.common.sampling import Prompt, SamplingConfig, TransformersBackend

    r = load_records(mcq_dir)[0]
    backend = TransformersBackend("", SamplingConfig(max_new_tokens=4), model=model, processor=processor)
    outs = backend.sample([Prompt(build_messages(r, "direct"), open_image(mcq_dir, r))], n=2)
    assert len(outs) == 1 and len(outs[0]) == 2 and all(isinstance(o, str) for o in outs[0])

