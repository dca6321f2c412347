"""How a training step starts: one process per visible GPU through `accelerate launch`, or this process alone.

    cmd = launch_command("components.grpo", ["--model", "m", ...], num_processes=4, deepspeed=True)
    # [python, -m, accelerate.commands.launch, --use_deepspeed, --zero_stage, 3, --num_processes, 4, ...,
    #  -m, components.grpo, --model, m, ...]

The sft and grpo launchers parse and validate their flags (and the recipe YAML) in the process the user or the
Kubeflow component started. When the step needs more than that one process (several GPUs, or DeepSpeed, which needs
a distributed launcher even on one GPU) that process becomes a supervisor: it starts `launch_command(...)` with every
parsed field passed as an explicit flag (`dataclass_argv`), forwards SIGTERM to it, and returns its exit status. The
started processes see `LAUNCHED_ENV` and train.

    one GPU, no DeepSpeed         python -m components.grpo ...                        (in this process)
    N >= 2 GPUs                   accelerate launch --multi_gpu --num_processes N ...  (DDP over NCCL)
    DeepSpeed, N >= 1 GPUs        accelerate launch --use_deepspeed --zero_stage 3 --num_processes N ...
    CPU, N >= 2 processes         python -m torch.distributed.run --nproc_per_node N ...  (DDP over gloo: accelerate
                                  launches several CPU processes only through mpirun, absent from the images)

The DeepSpeed settings themselves come from `components.common.deepspeed.zero3_config` through the trainer's
arguments; the launcher only starts the processes (and says ZeRO stage 3).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

LAUNCHED_ENV = "MEDBRIDGE_LAUNCHED"  # set in the processes a supervisor started: they train, never relaunch
GPUS_ENV = "MEDBRIDGE_NUM_GPUS"  # overrides the visible GPU count (tests; a node that hides GPUs from torch)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """This process's place in a torchrun / accelerate launch (rank 0 of 1 when started alone)."""
    env = os.environ
    return DistInfo(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)))


def visible_gpus() -> int:
    """CUDA devices this process can use ($MEDBRIDGE_NUM_GPUS if set); 0 without CUDA."""
    if os.environ.get(GPUS_ENV):
        return int(os.environ[GPUS_ENV])
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def plan_processes(requested: int, gpus: int, deepspeed: bool) -> tuple[int, bool]:
    """(processes, on_cpu) for a step: `requested` > 0 wins, else one per visible GPU (1 on a CPU-only machine).

    Raises ValueError for what cannot run: DeepSpeed without a GPU, more GPU processes than visible GPUs."""
    on_cpu = gpus == 0
    if deepspeed and on_cpu:
        raise ValueError(
            "deepspeed=True needs CUDA GPUs and none is visible; set deepspeed: false (or --deepspeed false) to "
            "train on CPU"
        )
    n = requested if requested > 0 else max(gpus, 1)
    if not on_cpu and n > gpus:
        raise ValueError(f"num_processes={n} but only {gpus} GPU(s) are visible; set num_processes: 0 (one per GPU)")
    return n, on_cpu


def needs_launcher(num_processes: int, deepspeed: bool) -> bool:
    return num_processes > 1 or deepspeed


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(
    module: str,
    argv: list[str],
    *,
    num_processes: int,
    deepspeed: bool = False,
    cpu: bool = False,
    main_process_port: int = 29500,
    python: str | None = None,
) -> list[str]:
    """The command that runs `python -m module argv` as `num_processes` processes (see the module docstring)."""
    python = python or sys.executable
    if num_processes < 1:
        raise ValueError(f"num_processes={num_processes} must be >= 1")
    if not needs_launcher(num_processes, deepspeed):
        return [python, "-m", module, *argv]
    if cpu:
        if deepspeed:
            raise ValueError("DeepSpeed runs on GPUs only; set deepspeed: false on CPU")
        return [
            python, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(num_processes),
            "--master_addr", "127.0.0.1", "--master_port", str(main_process_port),
            "-m", module, *argv,
        ]
    cmd = [python, "-m", "accelerate.commands.launch"]
    cmd += ["--use_deepspeed", "--zero_stage", "3"] if deepspeed else ["--multi_gpu"]
    cmd += [
        "--num_processes", str(num_processes), "--num_machines", "1", "--machine_rank", "0",
        "--main_process_ip", "127.0.0.1", "--main_process_port", str(main_process_port),
        "--mixed_precision", "bf16", "--dynamo_backend", "no",
        "-m", module, *argv,
    ]
    return cmd


def flag_value(value: Any) -> str:
    """A dataclass field's value as the launchers read it back (booleans as true/false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def dataclass_argv(*objs: Any) -> list[str]:
    """Every init field of the dataclass instances as `--field-name value`: the parsed values, passed on whole."""
    argv: list[str] = []
    for obj in objs:
        for f in dataclasses.fields(obj):
            if f.init:
                argv += [f"--{f.name.replace('_', '-')}", flag_value(getattr(obj, f.name))]
    return argv


def is_launched() -> bool:
    """True in a process a supervisor (or torchrun / accelerate launch itself) started."""
    return bool(os.environ.get(LAUNCHED_ENV)) or "LOCAL_RANK" in os.environ


def run_supervised(cmd: list[str], env: dict[str, str] | None = None) -> int:
    """Run `cmd` (the training processes) to completion; SIGTERM / SIGINT to this process is passed on to it, so
    a preempted pod's processes save a checkpoint. Returns the exit status."""
    env = {**os.environ, **(env or {}), LAUNCHED_ENV: "1"}
    print(f"[medbridge] starting: {' '.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd, env=env)

    def forward(signum, _frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def maybe_relaunch(module: str, cfg: Any, io: Any, checkpoint_dir) -> int | None:
    """The supervisor's part of a training launcher (see the module docstring).

    `cfg` has `num_processes` and `deepspeed`, `io` has `checkpoint_dir`; `checkpoint_dir(n)` gives the task's
    checkpoint directory for n processes (computed once, here, and passed to every process). Returns None when this
    process should train itself, else the exit status of the processes it started."""
    if is_launched():
        return None
    n, on_cpu = plan_processes(cfg.num_processes, visible_gpus(), cfg.deepspeed)  # bad combinations raise here
    if not needs_launcher(n, cfg.deepspeed):
        return None
    if not io.checkpoint_dir:
        io = dataclasses.replace(io, checkpoint_dir=str(checkpoint_dir(n)))
    cfg = dataclasses.replace(cfg, num_processes=n)
    cmd = launch_command(
        module, dataclass_argv(cfg, io), num_processes=n, deepspeed=cfg.deepspeed, cpu=on_cpu,
        main_process_port=free_port(),
    )
    return run_supervised(cmd)
