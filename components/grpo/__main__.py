r"""Sharpen step launcher: GRPO (consistency-aware, GRPO-CARE) with a Pass@K support-collapse guard.

    python -m components.grpo --model-ref Qwen/Qwen2.5-VL-7B-Instruct --rl-set runs/rl_set \
        --watch-set runs/diag_set --diagnosis runs/diagnosis --out runs/grpo_model \
        [--init-model runs/sft_model] [--config configs/grpo_qwen25vl7b_care.yaml] [--max-steps 200 ...]

Trains --init-model when given (bridge branch: the SFT model), else --model-ref (sharpen branch). Every
SharpenConfig field is a flag (`--num-generations`, `--consistency-bonus`, `--lora/--no-lora`, ...); `--config`
reads a YAML of SharpenConfig fields first and flags override it. Writes a full Hugging Face model directory at
--out with train_log.json, metrics.json (reward first/last, Pass@K and Acc@1 before/after, support_collapsed)
and lineage.json.
"""

from __future__ import annotations

import argparse
import json
import sys

from components.common.cli import add_config_flags, config_from_args
from components.grpo.config import SharpenConfig


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m components.grpo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-ref", required=True, help="base model: HF id, local dir or s3:// URI")
    parser.add_argument("--rl-set", required=True, help="MCQ dataset dir of RL questions (balanced PMC-VQA)")
    parser.add_argument("--watch-set", required=True, help="MCQ dataset dir watched for support collapse (diag_set)")
    parser.add_argument("--diagnosis", required=True, help="diagnose step output dir (holds diagnosis.json)")
    parser.add_argument("--out", required=True, help="output model directory (written atomically)")
    parser.add_argument("--init-model", default=None, help="model dir to train instead of --model-ref (SFT output)")
    parser.add_argument("--config", default=None, help="YAML file of SharpenConfig fields (flags override it)")
    add_config_flags(parser.add_argument_group(SharpenConfig.__name__), SharpenConfig, overrides_only=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        cfg = config_from_args(SharpenConfig, args, args.config)
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from components.grpo.train import train_grpo

    try:
        metrics = train_grpo(
            cfg, args.model_ref, args.rl_set, args.watch_set, args.diagnosis, args.out, init_model=args.init_model
        )
    except (FileNotFoundError, ValueError) as e:  # bad input: the message names the file and field
        print(f"grpo: {e}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
