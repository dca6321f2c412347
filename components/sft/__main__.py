r"""Bridge step launcher: SFT on proximal data chosen from the diagnosis.

    python -m components.sft --config sft_qwen25vl7b_full --model Qwen/Qwen2.5-VL-7B-Instruct \
        --sft-set runs/sft_set --diagnosis runs/diagnosis --out runs/sft_model \
        --teacher-model Qwen/Qwen2.5-VL-32B-Instruct [--max-steps 500 ...]

Flags are the fields of components.sft.config.SFTConfig (knobs: `--max-steps`, `--learning-rate`, `--lora true|false`,
...) and SFTIO (inputs and outputs); `--config` reads a recipe (a configs/ name or a YAML path) first and flags given
on the command line override it. With the think / scaffold formats the targets are rationales --teacher-model writes
for the correct answer (cached); with direct, the answer alone. On a machine with several GPUs (or with
`deepspeed: true`) this process validates everything, then starts one training process per GPU with
`accelerate launch` (components.common.launch) and returns their status. Checkpoints go to the cache volume under
the task's fingerprint; a rerun of the same task resumes from the newest complete one. Writes a full Hugging Face
model directory at --out with train_log.json, metrics.json and lineage.json.
"""

from __future__ import annotations

import json

from components.common.cli import StepParser, launch
from components.sft.config import SFTIO, SFTConfig

PROG = "python -m components.sft"
MODULE = "components.sft"


def make_parser() -> StepParser:
    return StepParser(PROG, __doc__, SFTConfig, SFTIO)


def run(cfg: SFTConfig, io: SFTIO) -> dict:
    from pathlib import Path

    from components.common.launch import dist_info, maybe_relaunch
    from components.sft.train import (
        METRICS_FILE,
        check_targets,
        io_checkpoint_dir,
        train_sft,
    )

    check_targets(cfg, io.teacher_model)
    status = maybe_relaunch(MODULE, cfg, io, lambda n: io_checkpoint_dir(cfg, io, n))
    if status is not None:  # the training processes ran; their rank 0 wrote the model
        if status != 0:
            raise SystemExit(status)
        return json.loads((Path(io.out) / METRICS_FILE).read_text())
    metrics = train_sft(cfg, io)
    if dist_info().is_main:
        print(json.dumps(metrics, indent=2, sort_keys=True))
    return metrics


def main(argv: list[str] | None = None) -> int:
    return launch(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
