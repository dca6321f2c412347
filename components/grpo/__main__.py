r"""Sharpen step launcher: GRPO (consistency-aware, GRPO-CARE) with a Pass@K support-collapse guard.

    python -m components.grpo --model Qwen/Qwen2.5-VL-7B-Instruct --rl-set runs/rl_set \
        --watch-set runs/diag_set --diagnosis runs/diagnosis --out runs/grpo_model \
        [--init-model runs/sft_model] [--config configs/grpo_qwen25vl7b_care.yaml] [--max-steps 200 ...]

Trains --init-model when given (bridge branch: the SFT model), else --model (sharpen branch). Flags are the fields
of components.grpo.config.SharpenConfig (knobs: `--num-generations`, `--consistency-bonus`, `--lora true|false`, ...)
and SharpenIO (inputs and outputs); `--config` reads a YAML of those fields first and flags override it. Writes a full Hugging Face model directory at
--out with train_log.json, metrics.json (reward first/last, Pass@K and Acc@1 before/after, support_collapsed)
and lineage.json.
"""

from __future__ import annotations

import json

from components.common.cli import StepParser, launch
from components.grpo.config import SharpenConfig, SharpenIO

PROG = "python -m components.grpo"


def make_parser() -> StepParser:
    return StepParser(PROG, __doc__, SharpenConfig, SharpenIO)


def run(cfg: SharpenConfig, io: SharpenIO) -> dict:
    from components.grpo.train import train_grpo

    metrics = train_grpo(cfg, io)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return metrics


def main(argv: list[str] | None = None) -> int:
    return launch(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
