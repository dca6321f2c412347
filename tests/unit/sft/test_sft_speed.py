"""The bridge step's speed knobs within what TRL allows for vision data: each example's token count without processing
its image (equal to the processor's), length-grouped batches over those counts (less padding than random order, and
training still works), gradient checkpointing and Liger's kernels reaching TRL."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest

from components.sft.config import SFTConfig


def _rows(sizes, fmt="think"):
    """SFT rows (build_sft_rows' format) with images of the given (height, width) and targets of growing length."""
    import numpy as np
    from PIL import Image

    from components.common.prompts import build_messages
    from components.common.records import MCQRecord
    from components.sft.rationales import sft_target

    rng = np.random.default_rng(0)
    rows = []
    for i, (h, w) in enumerate(sizes):
        rec = MCQRecord(id=f"q{i}", question="Which finding? " * (1 + i % 3), options=["a", "b"], answer="AB"[i % 2],
                        image="x.png", task="t", modality="CT")
        rationale = "the lesion is bright " * (1 + (7 * i) % 5) if fmt != "direct" else None
        rows.append({"prompt": build_messages(rec, fmt),
                     "completion": [{"role": "assistant", "content": sft_target(rec, fmt, rationale)}],
                     "images": [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))]})
    return rows


@pytest.mark.parametrize(
    "sizes, max_pixels",
    [
        ([(56, 56), (112, 112)], 0),  # square images at the tiny processor's own bounds
        ([(100, 60), (200, 300), (40, 90)], 112 * 112),  # odd sides are rounded to 28, the area capped
        ([(500, 500), (30, 700)], 56 * 112),  # above the cap; an extreme aspect ratio
    ],
)
def test_example_lengths_equal_the_processors_token_counts(tiny_model_dir, sizes, max_pixels):
    from components.common.modeling import load_processor
    from components.sft.data import example_lengths

    proc = load_processor(str(tiny_model_dir), max_pixels=max_pixels or None)
    rows = _rows(sizes)
    real = []
    for r in rows:
        text = proc.apply_chat_template(r["prompt"] + r["completion"], tokenize=False)
        real.append(proc(text=[text], images=r["images"], return_tensors="pt")["input_ids"].shape[1])
    assert example_lengths(rows, proc) == real
    assert len(set(real)) == len(real)  # distinct lengths: the images and texts really differ


@pytest.mark.parametrize(
    "knobs, on_cuda, expected",
    [
        ({}, True, {"train_sampling_strategy": "random", "gradient_checkpointing": True, "use_liger_kernel": False,
                    "remove_unused_columns": True}),  # the defaults: TRL's own behaviour
        ({"group_by_length": True}, True, {"train_sampling_strategy": "group_by_length",
                                           "remove_unused_columns": False}),  # the sampler reads `length`
        ({"gradient_checkpointing": False}, True, {"gradient_checkpointing": False}),  # activations kept
        ({"gradient_checkpointing": True}, False, {"gradient_checkpointing": False}),  # CPU never checkpoints
        ({"liger_kernels": True}, True, {"use_liger_kernel": True}),  # TRL keeps its own fused LM head
    ],
)
def test_speed_knobs_reach_trl(knobs, on_cuda, expected):
    from components.sft.train import sft_trainer_args

    got = sft_trainer_args(SFTConfig(**knobs), max_steps=4, on_cuda=on_cuda, output_dir="/tmp/x")
    assert {k: got[k] for k in expected} == expected


def test_liger_where_it_cannot_run_is_refused(monkeypatch):
    import torch

    from components.sft.train import require_speed_packages

    require_speed_packages(SFTConfig())  # nothing needed by default
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="liger_kernels=True: Liger's kernels are Triton kernels for CUDA GPUs"):
            require_speed_packages(SFTConfig(liger_kernels=True))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU node whose image lacks the package
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ValueError, match="liger_kernels=True needs the liger-kernel package"):
        require_speed_packages(SFTConfig(liger_kernels=True))


def test_length_grouped_batches_pad_less_and_train(tiny_model_dir, tmp_path):
    import math

    from transformers.trainer_pt_utils import LengthGroupedSampler
    from trl import SFTConfig as TRLSFTConfig

    from components.common.modeling import load_model_and_processor
    from components.sft.data import example_lengths
    from components.sft.train import make_sft_trainer, sft_trainer_args

    # 48 examples at 2 per batch: transformers sorts mega-batches of 12 (it keeps at least 4 of them).
    sizes = [(56 * (1 + i % 4), 56 * (1 + (3 * i) % 4)) for i in range(48)]
    rows = _rows(sizes)

    def trainer_for(group):
        cfg = SFTConfig(prompt_format="think", max_steps=2, per_device_batch_size=2, learning_rate=1e-3,
                        warmup_ratio=0.0, save_every_steps=0, tune_vision=True, group_by_length=group, seed=0)
        model, proc = load_model_and_processor(str(tiny_model_dir), device="cpu", max_pixels=224 * 224)
        args = TRLSFTConfig(**sft_trainer_args(cfg, max_steps=2, on_cuda=False, output_dir=str(tmp_path / str(group))))
        return make_sft_trainer(cfg, model=model, processor=proc, args=args, rows=rows), proc

    def padding(trainer, lengths):
        order = list(trainer._get_train_sampler())
        batches = [order[i : i + 2] for i in range(0, len(order), 2)]
        return sum(2 * max(lengths[j] for j in b) - sum(lengths[j] for j in b) for b in batches)

    grouped, proc = trainer_for(True)
    lengths = example_lengths(rows, proc)
    sampler = grouped._get_train_sampler()
    assert isinstance(sampler, LengthGroupedSampler) and list(sampler.lengths) == lengths  # our counts, no pass
    assert sorted(sampler) == list(range(len(rows)))  # every example once
    random_order, _ = trainer_for(False)
    assert padding(grouped, lengths) < 0.5 * padding(random_order, lengths)
    grouped.train()
    losses = [h["loss"] for h in grouped.state.log_history if "loss" in h]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)


def test_every_speed_knob_is_a_recipe_field():
    names = {f.name for f in dataclasses.fields(SFTConfig)}
    assert {"group_by_length", "gradient_checkpointing", "liger_kernels", "per_device_batch_size"} <= names
