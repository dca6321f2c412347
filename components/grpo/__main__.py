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
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from components.grpo.config import SharpenConfig


def add_config_flags(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per dataclass field (bools as --x/--no-x); defaults None so only given flags override."""
    group = parser.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata.get('help', '')} (default: {f.default})"
        if f.type in (bool, "bool"):
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            typ = {"int": int, "float": float, "str": str}.get(f.type if isinstance(f.type, str) else f.type.__name__)
            group.add_argument(flag, dest=f.name, type=typ, default=None, help=help_text)


def config_from_args(cls, args: argparse.Namespace):
    values: dict[str, Any] = {}
    if args.config:
        import yaml

        loaded = yaml.safe_load(Path(args.config).read_text()) or {}
        unknown = set(loaded) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"{args.config}: unknown {cls.__name__} field(s) {', '.join(sorted(unknown))}")
        values.update(loaded)
    for f in dataclasses.fields(cls):
        if getattr(args, f.name) is not None:
            values[f.name] = getattr(args, f.name)
    return cls(**values)


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
    add_config_flags(parser, SharpenConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        cfg = config_from_args(SharpenConfig, args)
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from components.grpo.train import train_grpo

    metrics = train_grpo(
        cfg, args.model_ref, args.rl_set, args.watch_set, args.diagnosis, args.out, init_model=args.init_model
    )
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
