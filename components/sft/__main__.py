r"""Bridge step launcher: SFT on proximal data chosen from the diagnosis.

    python -m components.sft --model Qwen/Qwen2.5-VL-7B-Instruct --sft-set runs/sft_set \
        --diagnosis runs/diagnosis --out runs/sft_model [--config configs/sft_qwen25vl7b_lora.yaml] [--max-steps 500 ...]

Flags are the fields of components.sft.config.SFTConfig (knobs: `--max-steps`, `--learning-rate`, `--lora true|false`,
...) and SFTIO (inputs and outputs); `--config` reads a YAML of those fields first and flags given on the command
line override it. Writes a full Hugging Face model directory at --out with train_log.json, metrics.json and
lineage.json.
"""

from __future__ import annotations

import json

from components.common.cli import StepParser, launch
from components.sft.config import SFTIO, SFTConfig

PROG = "python -m components.sft"


def make_parser() -> StepParser:
    return StepParser(PROG, __doc__, SFTConfig, SFTIO)


def run(cfg: SFTConfig, io: SFTIO) -> dict:
    from components.sft.train import train_sft

    metrics = train_sft(cfg, io)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return metrics


def main(argv: list[str] | None = None) -> int:
    return launch(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
