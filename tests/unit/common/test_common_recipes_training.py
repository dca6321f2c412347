"""Recipes by name, overrides as flags, the JSONL cache, and the pure training rules (learning rates, step counts,
LoRA targets, the parameter digest)."""

from __future__ import annotations

import math

import pytest

from components.common.jsonl_cache import JsonlCache
from components.common.recipes import override_flags, resolve_config
from components.common.training import (
    changed_fraction,
    effective_learning_rate,
    lora_targets,
    param_digest,
    steps_for_epochs,
)


def test_resolve_config_by_name_or_path(tmp_path):
    by_name = resolve_config("grpo_qwen25vl7b_care")
    assert by_name.name == "grpo_qwen25vl7b_care.yaml" and by_name.is_file()
    assert resolve_config("configs/sft_demo_tiny.yaml").name == "sft_demo_tiny.yaml"
    own = tmp_path / "mine.yaml"
    own.write_text("max_steps: 3\n")
    assert resolve_config(str(own)) == own
    with pytest.raises(FileNotFoundError, match="no such config file or recipe; recipes: .*grpo_demo_tiny"):
        resolve_config("grpo_nonexistent")


@pytest.mark.parametrize(
    "text, flags",
    [
        ("", []),  # nothing to override
        ("{max_steps: 50}", ["--max-steps", "50"]),
        ("{lora: true, deepspeed: false}", ["--lora", "true", "--deepspeed", "false"]),  # booleans as the parser reads
        ("max_new_tokens: 64\nlearning_rate: 1.0e-5\n", ["--max-new-tokens", "64", "--learning-rate", "1e-05"]),
    ],
)
def test_override_flags(text, flags):
    assert override_flags(text) == flags


@pytest.mark.parametrize("text", ["[1, 2]", "max_steps", "{a: [}"])
def test_override_flags_rejects_non_mappings(text):
    with pytest.raises(ValueError, match="grpo_overrides"):
        override_flags(text, "grpo_overrides")


@pytest.mark.parametrize(
    "step, lr, lora, expected",
    [
        ("grpo", 0.0, False, 5e-7),  # full weights: the public GRPO-CARE rate
        ("grpo", 0.0, True, 1e-5),  # LoRA needs a larger step
        ("sft", 0.0, False, 1e-5),
        ("sft", 0.0, True, 1e-4),
        ("grpo", 3e-6, True, 3e-6),  # an explicit rate is kept
    ],
)
def test_effective_learning_rate(step, lr, lora, expected):
    assert effective_learning_rate(step, lr, lora) == expected


@pytest.mark.parametrize(
    "n, per_step, epochs, drop_last, expected",
    [
        (8000, 4, 1.0, True, 2000),  # the public run: 8k prompts, 1 prompt x 4 GPUs -> 2,000 steps
        (8000, 8, 1.0, True, 1000),  # 8 GPUs: half as many steps
        (10, 4, 1.0, True, 2),  # TRL's sampler drops the last partial batch
        (10, 4, 1.0, False, 3),  # the SFT loader keeps it
        (10, 4, 2.0, False, 6),  # two epochs
        (3, 4, 1.0, True, 1),  # fewer items than one batch: still one step
    ],
)
def test_steps_for_epochs(n, per_step, epochs, drop_last, expected):
    assert steps_for_epochs(n, per_step, epochs, drop_last=drop_last) == expected


def test_lora_targets_add_the_vision_tower_only_when_asked():
    import re

    lm = r".*language_model.*\.(q_proj|v_proj)"
    assert lora_targets(lm, False) == lm
    both = lora_targets(lm, True)
    assert re.fullmatch(both, "model.visual.blocks.3.attn.qkv") and re.fullmatch(both, "model.visual.merger.mlp.0")
    assert re.fullmatch(both, "model.language_model.layers.0.self_attn.q_proj")
    assert not re.fullmatch(lm, "model.visual.blocks.3.attn.qkv")


def test_param_digest_tells_changed_tensors():
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 2))
    before = param_digest(model)
    with torch.no_grad():
        model[1].weight.add_(0.5)
    after = param_digest(model)
    assert changed_fraction(before, after) == 0.25  # 1 of 4 tensors
    assert param_digest(model.state_dict()) == after  # a gathered state dict digests the same
    assert math.isclose(changed_fraction(before, before), 0.0)


def test_jsonl_cache_survives_a_torn_line_and_merges_writers(tmp_path):
    cache = JsonlCache(tmp_path / "c")
    cache.append([{"key": "a", "v": 1}, {"key": "b", "v": 2}])
    (tmp_path / "c" / "other-writer.jsonl").write_text('{"key": "c", "v": 3}\n{"key": "d", "v":')  # torn last line
    again = JsonlCache(tmp_path / "c")
    assert sorted(again.rows) == ["a", "b", "c"] and again.get("b")["v"] == 2 and again.get("d") is None
