"""The sharpen step on the tiny model: GRPO(-CARE) with and without LoRA, the saved model, the step count rule, every
setting reaching TRL or a named consumer, the guard stopping a destructive run, SIGTERM -> checkpoint -> resume.

A random-weight model never answers correctly, so every completion would get reward 0, every advantage would be 0 and
nothing would train. Where a test needs a learning signal on the random model it swaps the accuracy reward for one
that varies within a group (length parity) under the same name; the guard and resume tests use `warm_model_dir`
(the tiny model after a short answer-only SFT), whose real rewards vary. The real rewards are tested table-driven in
test_grpo_rewards.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal

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
    assert metrics["steps"] == 3 and metrics["init_from"] == "init_model" and metrics["num_processes"] == 1
    assert metrics["consistency_aware"] is True and metrics["learning_rate"] == cfg.learning_rate
    assert metrics["params_changed_fraction"] > 0
    for key in ("pass_at_k_before", "pass_at_k_after", "acc_at_1_before", "acc_at_1_after"):
        assert 0.0 <= metrics[key] <= 1.0
    for key in ("pass_corrected_before", "pass_corrected_after", "acc_corrected_before", "acc_corrected_after"):
        assert -1.0 <= metrics[key] <= 1.0
    # A random model answers nothing: corrected support sits at -1 and cannot collapse further; the trained model ships.
    assert metrics["support_collapsed"] is False and metrics["shipped_step"] == 3

    log = json.loads((out / "train_log.json").read_text())
    assert [s["step"] for s in log["steps"]] == [1, 2, 3]
    assert all("step_seconds" in s for s in log["steps"])
    # The CARE hook filled its own reward column and read confidences from the EMA reference.
    assert all("rewards/care_consistency_bonus/mean" in s and "care/reference_confidence" in s for s in log["steps"])
    assert any(s["rewards/care_consistency_bonus/mean"] > 0 for s in log["steps"])
    assert [w["step"] for w in log["support_watch"]] == ([0, 3] if lora else [0, 2, 3])  # start, every 2 steps, end
    assert log["guard"]["ship_step"] == 3 and "support held" in log["guard"]["reason"]
    assert metrics["reward_mean_first"] == log["steps"][0]["reward"]
    assert (out / "support_watch.png").stat().st_size > 1000
    # The run report shows the watch: its table, the guard's reason and the plot, from the trained model's files.
    from components.evaluate.report import build_context, render_html

    watch = build_context({}, input_dirs={"model": str(out)})["watch"]
    assert watch["available"] and len(watch["table"]["rows"]) == len(log["support_watch"])
    assert watch["table"]["rows"][-1]["cells"][0]["text"] == "3 (shipped)" and "support held" in watch["reason"]
    assert 'id="sec-watch"' in render_html(build_context({}, input_dirs={"model": str(out)}))
    assert watch["images"][0]["src"].startswith("data:image/png;base64,")
    assert not os.path.exists(metrics["checkpoint_dir"])  # the task's checkpoints are deleted once the model is written

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
        "--watch-max-new-tokens", "4", "--consistency-bonus", "0", "--learning-rate", "5e-3", "--rollout", "trl",
    ])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["consistency_aware"] is False and metrics["init_from"] == "model"
    assert metrics["policy_forward"] == "prompt once"  # CPU never checkpoints: the shared prompt forward applies
    assert list(metrics["policy_forward_calls"]) == ["prompt once"] and metrics["policy_forward_calls"]["prompt once"] >= 2
    log = json.loads((out / "train_log.json").read_text())
    assert not any("rewards/care_consistency_bonus/mean" in s for s in log["steps"])  # plain TRL GRPO, TRL's generate


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_generations": 1}, "num_generations=1"),  # no group to compare against
        ({"ema_decay": 1.0}, "ema_decay=1.0"),  # the reference would never move
        ({"confidence_upper_bound": 0.0}, "confidence_upper_bound=0.0"),  # clips every confidence to 0
        ({"consistency_bonus": -0.5}, "consistency_bonus=-0.5"),  # a penalty is not GRPO-CARE
        ({"collapse_tolerance": 2.0}, "collapse_tolerance=2.0"),  # not a fraction
        ({"prompt_format": "cot"}, "prompt_format='cot'"),  # unknown prompt format
        ({"lora": True, "deepspeed": True}, "lora=True and deepspeed=True conflict"),  # LoRA + ZeRO-3 (+ CARE)
        ({"offload_optimizer": True}, "offload_optimizer=True needs deepspeed=True"),  # a DeepSpeed-only setting
        ({"epochs": 0.0}, "epochs=0.0"),  # no pass over the data
        ({"max_steps": -1}, "max_steps=-1"),  # 0 means derive, negatives mean nothing
    ],
)
def test_sharpen_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SharpenConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, n_prompts, n_proc, steps, rule",
    [
        ({"max_steps": 7}, 8000, 4, 7, "set by the recipe"),  # explicit
        ({}, 8000, 4, 2000, "1 epoch(s) over 8000 prompts at 4 prompts per step"),  # the public run on 4 GPUs
        ({}, 8000, 8, 1000, "x 8 process(es)"),  # the same recipe on 8 GPUs: one epoch is half as many steps
        ({"prompts_per_step": 2, "gradient_accumulation_steps": 2}, 8000, 4, 500, "16 prompts per step"),
        ({"epochs": 0.5}, 8000, 4, 1000, "0.5 epoch(s)"),
    ],
)
def test_grpo_max_steps(kwargs, n_prompts, n_proc, steps, rule):
    from components.grpo.train import grpo_max_steps

    got, why = grpo_max_steps(SharpenConfig(**kwargs), n_prompts, n_proc)
    assert got == steps and rule in why


# Fields of SharpenConfig that do not reach TRL's GRPOConfig, and who reads each of them instead.
NOT_TRL = {
    "prompt_format": "prompts (build_grpo_rows) and the format reward (make_format_reward)",
    "max_steps": "grpo_max_steps", "epochs": "grpo_max_steps",
    "max_pixels": "load_processor / load_model_and_processor",
    "lora_r": "peft LoraConfig", "lora_alpha": "peft LoraConfig",  # (lora itself also sets the default rate)
    "lora_target_modules": "peft LoraConfig",
    "consistency_bonus": "ConsistencyGRPOTrainer", "confidence_upper_bound": "ConsistencyGRPOTrainer",
    "consistency_margin": "ConsistencyGRPOTrainer", "ema_decay": "ConsistencyGRPOTrainer",
    "ema_every": "ConsistencyGRPOTrainer",
    "max_prompts": "rl_set selection", "k": "support guard", "watch_size": "support guard",
    "watch_max_new_tokens": "support guard", "collapse_tolerance": "support guard", "stop_on_collapse": "support guard",
    "keep_checkpoints": "train_grpo's clean-up", "num_processes": "components.common.launch",
    "rollout_max_rows": "SharedPrefixRollout",  # (rollout itself reaches TRL: vllm sets use_vllm)
    "shared_prompt_forward": "PromptOnceMixin.enable_prompt_once (test_grpo_prompt_once)",
}


def _changed(cfg, name):
    v = getattr(cfg, name)
    if isinstance(v, bool):
        extra = {"deepspeed": True} if name == "offload_optimizer" else {}
        return dataclasses.replace(cfg, **{name: not v}, **extra), extra
    if isinstance(v, int):
        return dataclasses.replace(cfg, **{name: v + 2}), {}
    if isinstance(v, float):
        return dataclasses.replace(cfg, **{name: round(v * 0.5 + 0.25, 6) if name != "top_p" else 0.5}), {}
    return dataclasses.replace(cfg, **{name: {"prompt_format": "direct", "rollout": "vllm"}.get(name, v + "x")}), {}


def test_every_setting_reaches_trl_or_a_named_consumer():
    """Nothing in the recipe is silently dropped: each field changes TRL's arguments, or is read elsewhere (NOT_TRL)."""
    from components.grpo.train import grpo_trainer_args

    def trl(c):  # on both devices: some settings (gradient checkpointing) only act on a GPU
        return [grpo_trainer_args(c, max_steps=10, on_cuda=cuda, output_dir="/tmp/x", suppress=[1])
                for cuda in (False, True)]

    reaching = set()
    for f in dataclasses.fields(SharpenConfig):
        changed, extra = _changed(SharpenConfig(), f.name)
        base = dataclasses.replace(SharpenConfig(), **extra)
        if trl(changed) != trl(base):
            reaching.add(f.name)
    assert not reaching & set(NOT_TRL), "a field listed as read elsewhere reaches TRL: update NOT_TRL"
    assert reaching | set(NOT_TRL) == {f.name for f in dataclasses.fields(SharpenConfig)}


def test_guard_stops_a_destructive_run_and_ships_the_best(warm_model_dir, mcq_dir, bridge_diagnosis, tmp_path):
    """A learning rate of 1.0 wrecks the warmed-up model in one step: the guard sees the collapse at its first watch
    point, stops, and ships the best checkpoint before it (here the starting model itself), saying why."""
    from safetensors.numpy import load_file

    from components.common.lineage import read_lineage
    from components.grpo.train import train_grpo

    out = tmp_path / "m"
    cfg = SharpenConfig(prompt_format="direct", max_steps=6, learning_rate=1.0, num_generations=8, max_new_tokens=6,
                        temperature=0.7, top_p=0.9, k=4, watch_size=12, watch_max_new_tokens=6,
                        watch_every_steps=2, ema_every=1,
                        collapse_tolerance=0.05)
    metrics = train_grpo(cfg, SharpenIO(str(warm_model_dir), str(mcq_dir), str(mcq_dir), str(bridge_diagnosis),
                                        str(out)))
    log = json.loads((out / "train_log.json").read_text())
    start, watched = log["support_watch"][0], log["support_watch"][1]
    assert watched["step"] == 2 and watched["pass_corrected_ci"][1] < start["pass_corrected"] - 0.05  # collapsed
    assert metrics["support_collapsed"] is True and metrics["guard"]["collapse_step"] == 2
    assert metrics["steps"] == 2 < cfg.max_steps  # training stopped at the collapse
    assert metrics["shipped_step"] == 0 and "shipping the starting model" in metrics["guard"]["reason"]
    assert metrics["params_changed_fraction"] == 0.0
    assert metrics["pass_corrected_after"] == start["pass_corrected"]  # "after" is what ships
    shipped, warm = load_file(str(out / "model.safetensors")), load_file(str(warm_model_dir / "model.safetensors"))
    assert shipped.keys() == warm.keys() and all((shipped[k] == warm[k]).all() for k in warm)
    assert "SUPPORT COLLAPSED" in read_lineage(out)["summary"]


def test_sigterm_saves_a_whole_checkpoint_then_a_rerun_resumes(
    monkeypatch, varying_reward, tiny_model_dir, mcq_dir, bridge_diagnosis, tmp_path
):
    """SIGTERM to this process at step 2 (a real signal): the step ends, a complete checkpoint (policy, optimizer,
    scheduler, RNG, EMA reference, watch history) is saved, the run exits 143; the same task run again resumes."""
    from transformers import TrainerCallback

    import components.common.training as training
    from components.common.checkpoints import check_complete
    from components.grpo.train import (
        EMA_FILE,
        PREEMPTED_STATUS,
        WATCH_FILE,
        task_checkpoint_dir,
        train_grpo,
    )

    class SignalAtStep2(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    real = training.step_stats_callback
    monkeypatch.setattr(training, "step_stats_callback", lambda: SignalAtStep2())
    cfg = small_cfg(max_steps=4, watch_every_steps=3)
    io = SharpenIO(str(tiny_model_dir), str(mcq_dir), str(mcq_dir), str(bridge_diagnosis), str(tmp_path / "m"))
    with pytest.raises(SystemExit) as stopped:
        train_grpo(cfg, io)
    assert stopped.value.code == PREEMPTED_STATUS and not (tmp_path / "m").exists()
    ckpt = task_checkpoint_dir(cfg, io, 1) / "checkpoint-2"
    assert check_complete(ckpt) is None
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json",
                 EMA_FILE, WATCH_FILE):
        assert (ckpt / name).is_file(), name
    assert [h["step"] for h in json.loads((ckpt / WATCH_FILE).read_text())["history"]] == [0]
    assert signal.getsignal(signal.SIGTERM) is not None  # the handler was put back

    monkeypatch.setattr(training, "step_stats_callback", real)
    metrics = train_grpo(cfg, io)
    assert metrics["resumed_from"] == str(ckpt) and metrics["steps"] == 4
    log = json.loads((tmp_path / "m" / "train_log.json").read_text())
    assert [s["step"] for s in log["steps"]] == [1, 2, 3, 4]  # the log of steps 1-2 came back with the checkpoint
    assert [h["step"] for h in log["support_watch"]] == [0, 3, 4]  # step 0 was not measured again
