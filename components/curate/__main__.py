"""Curate launcher: raw MedMNIST-v2 + PMC-VQA -> validated MCQ datasets, the validated npz copy and a report.

    python -m components.curate \
        --medmnist-root s3://medbridge-data/medmnist --pmc-vqa-root s3://medbridge-data/pmc-vqa \
        --flags all --seed 0 --rl-size 8000 --include-none false \
        --labeller-model Qwen/Qwen2.5-VL-32B-Instruct \
        --diag-per-class 20 --eval-per-class 50 --sft-per-class 500 \
        --out-medmnist-data out/medmnist_data --out-diag-set out/diag_set --out-eval-set out/eval_set \
        --out-sft-set out/sft_set --out-rl-set out/rl_set --out-curation-report out/curation_report

Every flag except the --out-* ones is a field of components.curate.config.CurateConfig (same name, dashes for
underscores). Each --out-* directory is replaced atomically and carries lineage.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from components.common.cli import add_config_flags
from components.curate.config import CurateConfig

OUTPUTS = ("medmnist_data", "diag_set", "eval_set", "sft_set", "rl_set", "curation_report")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m components.curate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_flags(parser, CurateConfig)
    for name in OUTPUTS:
        parser.add_argument(f"--out-{name.replace('_', '-')}", dest=f"out_{name}", required=True,
                            help=f"output directory for {name}")
    return parser


def main(argv: list[str] | None = None) -> int:
    from components.curate.run import CurateOutputs, run_curate

    args = vars(make_parser().parse_args(argv))
    outs = CurateOutputs(**{name: Path(args.pop(f"out_{name}")) for name in OUTPUTS})
    try:
        cfg = CurateConfig(**args)
    except ValueError as e:
        print(f"curate: {e}", file=sys.stderr)
        return 2
    try:
        summary = run_curate(cfg, outs)
    except (FileNotFoundError, ValueError) as e:  # bad input or a failed validation suite: the message says which
        print(f"curate: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"counts": summary["counts"], "quarantined": summary["pmc_vqa"]["quarantined"],
                      "synthetic": summary["synthetic"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
