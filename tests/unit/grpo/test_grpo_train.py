"""The sharpen step on the tiny model: 3 GRPO(-CARE) steps with and without LoRA, saved model, guard metrics.

A random-weight model never answers correctly, so every completion would get reward 0, every advantage would
be 0 and nothing would train. The runs below therefore swap the accuracy reward for one that varies within a
group (length parity) under the same name, so TRL and the GRPO-CARE hook see a real spread of "correct" and
"wrong" completions. The real rewards are tested table-driven in test_train_rewards.py.
"""

from __future__ import annotations

import json

import pytest

from components.grpo.config import SharpenConfig, SharpenIO


def parity_accuracy(completions, answer, options=None, **kwargs):
    from components.grpo.rewards import completion_text

    return [float(len(completion_text(c)) % 2) for c in completions]


parity_accuracy.__name__ = "accuracy_reward"


def small_cfg(**kw) -> SharpenConfig:
    base = dict(prompt_format="direct", max_steps=3, learning_rate=5e-3, num_generations=4, max_new_tokens=8,
                k=2, watch_size=2, watch_max_new_tokens=6, ema_every=1, seed=0)
    return SharpenConfig(**{**base, **kw})


@pytest.fixture
def varying_reward(monkeypatch):
    import components.grpo.rewards as rewards

    monkeypatch.setattr(rewards, "accuracy_reward", parity_accuracy)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_grpo_care_trains_and_saves(lora, varying_reward, tiny_model_dir, mcq_dir, bridge_diagnosis, tmp_path):
    import torch

    from components.common.lineage import read_lineage
    from components.common.modeling import load_model_and_processor
    from components.grpo.train import train_grpo

    out = tmp_path / "grpo_model"
    cfg = small_cfg(lora=lora, learning_rate=5e-2 if lora else 5e-3, watch_every_steps=0 if lora else 2)
    # init_model is what gets trained; model is only recorded (a hub id never contacted here).
    io = SharpenIO("Qwen/never-loaded", str(mcq_dir), str(mcq_dir), str(bridge_diagnosis), str(out),
                   init_model=str(tiny_model_dir))
    metrics = train_grpo(cfg, io)
    assert metrics["steps"] == 3 and metrics["init_from"] == "init_model"
    assert metrics["consistency_aware"] is True
    assert metrics["params_changed_fraction"] > 0
    for key in ("pass_at_k_before", "pass_at_k_after", "acc_at_1_before", "acc_at_1_after"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["support_collapsed"] == (metrics["pass_at_k_before"] - metrics["pass_at_k_after"] > 0.05 + 1e-9)

    log = json.loads((out / "train_log.json").read_text())
    assert [s["step"] for s in log["steps"]] == [1, 2, 3]
    # The CARE hook filled its own reward column and read confidences from the EMA reference.
    assert all("rewards/care_consistency_bonus/mean" in s and "care/reference_confidence" in s for s in log["steps"])
    assert any(s["rewards/care_consistency_bonus/mean"] > 0 for s in log["steps"])
    assert [w["step"] for w in log["support_watch"]] == ([0, 3] if lora else [0, 2, 3])  # before, every 2 steps, after
    assert metrics["reward_mean_first"] == log["steps"][0]["reward"]

    lineage = read_lineage(out)
    assert lineage["step"] == "grpo" and lineage["inputs"]["base_model"]["ref"] == str(tiny_model_dir)
    model, processor = load_model_and_processor(str(out))
    assert not any("lora" in n for n, _ in model.named_parameters())  # LoRA merged: a plain full model
    base, _ = load_model_and_processor(str(tiny_model_dir))
    base_sd = base.state_dict()
    assert any(not torch.equal(p, base_sd[n]) for n, p in model.state_dict().items())


def test_grpo_plain_via_launcher(varying_reward, tiny_model_dir, mcq_dir, bridge_diagnosis, tmp_path):
    from components.grpo.__main__ import main

    out = tmp_path / "m"
    rc = main([
        "--model", str(tiny_model_dir), "--rl-set", str(mcq_dir), "--watch-set", str(mcq_dir),
        "--diagnosis", str(bridge_diagnosis), "--out", str(out), "--prompt-format", "direct", "--max-steps", "2",
        "--num-generations", "2", "--max-new-tokens", "6", "--k", "2", "--watch-size", "1",
        "--watch-max-new-tokens", "4", "--consistency-bonus", "0", "--learning-rate", "5e-3",
    ])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["consistency_aware"] is False and metrics["init_from"] == "model"
    log = json.loads((out / "train_log.json").read_text())
    assert not any("rewards/care_consistency_bonus/mean" in s for s in log["steps"])  # plain TRL GRPO


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_generations": 1}, "num_generations=1"),  # no group to compare against
        ({"ema_decay": 1.0}, "ema_decay=1.0"),  # the reference would never move
        ({"confidence_upper_bound": 0.0}, "confidence_upper_bound=0.0"),  # clips every confidence to 0
        ({"consistency_bonus": -0.5}, "consistency_bonus=-0.5"),  # a penalty is not GRPO-CARE
        ({"collapse_tolerance": 2.0}, "collapse_tolerance=2.0"),  # not a fraction
        ({"prompt_format": "cot"}, "prompt_format='cot'"),  # unknown prompt format
    ],
)
def test_sharpen_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SharpenConfig(**kwargs)
