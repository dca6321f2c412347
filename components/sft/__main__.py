r"""Bridge step launcher: SFT on proximal data chosen from the diagnosis.

    python -m components.sft --model-ref Qwen/Qwen2.5-VL-7B-Instruct --sft-set runs/sft_set \
        --diagnosis runs/diagnosis --out runs/sft_model [--config configs/sft_qwen25vl7b_lora.yaml] [--max-steps 500 ...]

Every SFTConfig field is a flag (`--max-steps`, `--learning-rate`, `--lora/--no-lora`, ...); `--config` reads a
YAML of SFTConfig fields first and flags given on the command line override it. Writes a full Hugging Face model
directory at --out with train_log.json, metrics.json and lineage.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from components.sft.config import SFTConfig


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
        prog="python -m components.sft", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-ref", required=True, help="base model: HF id, local dir or s3:// URI")
    parser.add_argument("--sft-set", required=True, help="MCQ dataset dir (records.jsonl + images/) of the SFT pool")
    parser.add_argument("--diagnosis", required=True, help="diagnose step output dir (holds diagnosis.json)")
    parser.add_argument("--out", required=True, help="output model directory (written atomically)")
    parser.add_argument("--config", default=None, help="YAML file of SFTConfig fields (flags override it)")
    add_config_flags(parser, SFTConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        cfg = config_from_args(SFTConfig, args)
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from components.sft.train import train_sft

    metrics = train_sft(cfg, args.model_ref, args.sft_set, args.diagnosis, args.out)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
