r"""Bridge step launcher: SFT on proximal data chosen from the diagnosis.

    python -m components.sft --model-ref Qwen/Qwen2.5-VL-7B-Instruct --sft-set runs/sft_set \
        --diagnosis runs/diagnosis --out runs/sft_model [--config configs/sft_qwen25vl7b_lora.yaml] [--max-steps 500 ...]

Every SFTConfig field is a flag (`--max-steps`, `--learning-rate`, `--lora/--no-lora`, ...); `--config` reads a
YAML of SFTConfig fields first and flags given on the command line override it. Writes a full Hugging Face model
directory at --out with train_log.json, metrics.json and lineage.json.
"""

from __future__ import annotations

import argparse
import json
import sys

from components.common.cli import add_config_flags, config_from_args
from components.sft.config import SFTConfig


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m components.sft", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-ref", required=True, help="base model: HF id, local dir or s3:// URI")
    parser.add_argument("--sft-set", required=True, help="MCQ dataset dir (records.jsonl + images/) of the SFT pool")
    parser.add_argument("--diagnosis", required=True, help="diagnose step output dir (holds diagnosis.json)")
    parser.add_argument("--out", required=True, help="output model directory (written atomically)")
    parser.add_argument("--config", default=None, help="YAML file of SFTConfig fields (flags override it)")
    add_config_flags(parser.add_argument_group(SFTConfig.__name__), SFTConfig, overrides_only=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        cfg = config_from_args(SFTConfig, args, args.config)
    except (ValueError, TypeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from components.sft.train import train_sft

    try:
        metrics = train_sft(cfg, args.model_ref, args.sft_set, args.diagnosis, args.out)
    except (FileNotFoundError, ValueError) as e:  # bad input: the message names the file and field
        print(f"sft: {e}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
