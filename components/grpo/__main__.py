r"""Sharpen step launcher: GRPO (consistency-aware, GRPO-CARE) with a support guard that acts.

    python -m components.grpo --config grpo_qwen25vl7b_care --model Qwen/Qwen2.5-VL-7B-Instruct \
        --rl-set runs/rl_set --watch-set runs/diag_set --diagnosis runs/diagnosis --out runs/grpo_model \
        [--init-model runs/sft_model] [--max-steps 200 ...]

Trains --init-model when given (bridge branch: the SFT model), else --model (sharpen branch). Flags are the fields
of components.grpo.config.SharpenConfig (knobs: `--num-generations`, `--consistency-bonus`, `--lora true|false`, ...)
and SharpenIO (inputs and outputs); `--config` reads a recipe (a configs/ name or a YAML path) first and flags
override it. On a machine with several GPUs (or with `deepspeed: true`) this process validates everything, then
starts one training process per GPU with `accelerate launch` (components.common.launch) and returns their status.
Checkpoints go to the cache volume under the task's fingerprint; a rerun of the same task resumes from the newest
complete one. Writes a full Hugging Face model directory at --out with train_log.json (TRL log, support watch,
guard decision), metrics.json, support_watch.png and lineage.json.
"""

from __future__ import annotations

import json

from components.common.cli import StepParser, launch
from components.grpo.config import SharpenConfig, SharpenIO

PROG = "python -m components.grpo"
MODULE = "components.grpo"


def make_parser() -> StepParser:
    return StepParser(PROG, __doc__, SharpenConfig, SharpenIO)


def run(cfg: SharpenConfig, io: SharpenIO) -> dict:
    from pathlib import Path

    from components.common.launch import dist_info, maybe_relaunch
    from components.grpo.train import METRICS_FILE, task_checkpoint_dir, train_grpo

    status = maybe_relaunch(MODULE, cfg, io, lambda n: task_checkpoint_dir(cfg, io, n))
    if status is not None:  # the training processes ran; their rank 0 wrote the model
        if status != 0:
            raise SystemExit(status)
        return json.loads((Path(io.out) / METRICS_FILE).read_text())
    metrics = train_grpo(cfg, io)
    if dist_info().is_main:
        print(json.dumps(metrics, indent=2, sort_keys=True))
    return metrics


def main(argv: list[str] | None = None) -> int:
    return launch(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
