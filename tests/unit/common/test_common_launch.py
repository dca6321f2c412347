"""components.common.launch: the command that starts a training step on 1, 2 and 8 GPUs (and on CPU), the process
plan, and the flags a supervisor passes to the processes it starts (every parsed field, read back unchanged)."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from components.common.launch import (
    dataclass_argv,
    launch_command,
    needs_launcher,
    plan_processes,
)

ARGV = ["--config", "grpo_qwen25vl7b_care", "--model", "m"]


def _value(cmd, flag):
    return cmd[cmd.index(flag) + 1]


def test_one_gpu_without_deepspeed_runs_in_this_interpreter():
    # One process needs no launcher: the step's own module, same Python, same flags.
    assert launch_command("components.grpo", ARGV, num_processes=1) == [sys.executable, "-m", "components.grpo", *ARGV]


@pytest.mark.parametrize("gpus", [1, 2, 8])
def test_deepspeed_launch_starts_one_process_per_gpu(gpus):
    cmd = launch_command("components.grpo", ARGV, num_processes=gpus, deepspeed=True, main_process_port=29611)
    # accelerate launch's DeepSpeed launcher (torchrun underneath): ZeRO-3, one process per GPU, even for one GPU
    # (DeepSpeed needs the distributed environment a launcher sets).
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert "--use_deepspeed" in cmd and _value(cmd, "--zero_stage") == "3" and "--multi_gpu" not in cmd
    assert _value(cmd, "--num_processes") == str(gpus) and _value(cmd, "--num_machines") == "1"
    assert _value(cmd, "--main_process_port") == "29611" and _value(cmd, "--mixed_precision") == "bf16"
    # The step module and its flags come last, unchanged.
    assert cmd[cmd.index("-m", 3):] == ["-m", "components.grpo", *ARGV]


@pytest.mark.parametrize("gpus", [2, 8])
def test_ddp_launch_for_several_gpus(gpus):
    cmd = launch_command("components.sft", ARGV, num_processes=gpus)
    assert cmd[2] == "accelerate.commands.launch" and "--multi_gpu" in cmd and "--use_deepspeed" not in cmd
    assert _value(cmd, "--num_processes") == str(gpus)
    assert cmd[-len(ARGV) - 2:] == ["-m", "components.sft", *ARGV]


def test_cpu_processes_use_torchrun_over_gloo():
    cmd = launch_command("components.grpo", ARGV, num_processes=2, cpu=True, main_process_port=29700)
    assert cmd[2] == "torch.distributed.run" and _value(cmd, "--nproc_per_node") == "2"
    assert _value(cmd, "--master_port") == "29700" and cmd[-len(ARGV) - 2:] == ["-m", "components.grpo", *ARGV]
    with pytest.raises(ValueError, match="DeepSpeed runs on GPUs only"):
        launch_command("components.grpo", ARGV, num_processes=2, cpu=True, deepspeed=True)


@pytest.mark.parametrize(
    "requested, gpus, deepspeed, expected",
    [
        (0, 0, False, (1, True)),  # CPU-only machine: one process
        (0, 1, False, (1, False)),  # one GPU: one process
        (0, 4, True, (4, False)),  # auto: one per visible GPU
        (2, 8, False, (2, False)),  # an explicit count wins
        (2, 0, False, (2, True)),  # several CPU processes (DDP over gloo)
    ],
)
def test_plan_processes(requested, gpus, deepspeed, expected):
    assert plan_processes(requested, gpus, deepspeed) == expected


@pytest.mark.parametrize(
    "requested, gpus, deepspeed, message",
    [
        (0, 0, True, "deepspeed=True needs CUDA GPUs"),  # DeepSpeed has no CPU path here
        (4, 2, False, "num_processes=4 but only 2 GPU"),  # more GPU processes than GPUs
    ],
)
def test_plan_processes_refuses(requested, gpus, deepspeed, message):
    with pytest.raises(ValueError, match=message):
        plan_processes(requested, gpus, deepspeed)


@pytest.mark.parametrize("n, deepspeed, expected", [(1, False, False), (1, True, True), (2, False, True)])
def test_needs_launcher(n, deepspeed, expected):
    assert needs_launcher(n, deepspeed) is expected


def _nondefault(cfg_cls, io):
    """A config whose every field differs from its default (so a dropped flag would show)."""
    cfg = cfg_cls()
    changes = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, bool):
            changes[f.name] = not v
        elif isinstance(v, int):
            changes[f.name] = v + 3
        elif isinstance(v, float):
            changes[f.name] = round(v + 0.01, 6) if v < 0.9 else round(v - 0.01, 6)
        elif f.name == "prompt_format":
            changes[f.name] = "direct"
        elif f.name == "rationales":
            changes[f.name] = "template"
        elif f.name == "rollout":
            changes[f.name] = "trl" if v != "trl" else "shared_prefix"
        else:
            changes[f.name] = v + "x"
    if "lora" in changes and changes.get("deepspeed"):
        changes["deepspeed"] = False  # LoRA + ZeRO-3 is refused
        changes["offload_optimizer"] = False
    return dataclasses.replace(cfg, **changes), io


@pytest.mark.parametrize("step", ["sft", "grpo"])
def test_supervisor_flags_round_trip_every_field(step):
    if step == "sft":
        from components.sft.__main__ import make_parser
        from components.sft.config import SFTIO, SFTConfig

        cfg, io = _nondefault(SFTConfig, SFTIO("m", "s", "d", "o", teacher_model="t", rationale_cache="c",
                                                checkpoint_dir="k"))
    else:
        from components.grpo.__main__ import make_parser
        from components.grpo.config import SharpenConfig, SharpenIO

        cfg, io = _nondefault(SharpenConfig, SharpenIO("m", "r", "w", "d", "o", init_model="", checkpoint_dir="k"))
    got_cfg, got_io = make_parser().parse(dataclass_argv(cfg, io))
    assert got_cfg == cfg and got_io == io
