"""Curate launcher: raw MedMNIST-v2 + PMC-VQA -> validated MCQ datasets, the validated npz copy and a report.

    python -m components.curate \
        --medmnist-root s3://medbridge-data/medmnist --pmc-vqa-root s3://medbridge-data/pmc-vqa \
        --flags all --seed 0 --rl-size 8000 --include-none false \
        --labeller-model Qwen/Qwen2.5-VL-32B-Instruct \
        --diag-per-class 20 --eval-per-class 50 --sft-per-class 500 --target-diag-per-modality 25 \
        --benchmarks-root s3://medbridge-data/benchmarks --benchmarks all \
        --out-medmnist-data out/medmnist_data --out-diag-set out/diag_set --out-eval-set out/eval_set \
        --out-sft-set out/sft_set --out-rl-set out/rl_set --out-rl-diag-set out/rl_diag_set \
        --out-curation-report out/curation_report

Flags are the fields of components.curate.config.CurateConfig (knobs; `--config FILE.yaml` sets them from a file)
and CurateIO (sources and outputs), with dashes for underscores. Each --out-* directory is replaced atomically and
carries lineage.json.
"""

from __future__ import annotations

import json

from components.common.cli import StepParser, launch
from components.curate.config import CurateConfig, CurateIO

PROG = "python -m components.curate"


def make_parser() -> StepParser:
    return StepParser(PROG, __doc__, CurateConfig, CurateIO)


def run(cfg: CurateConfig, io: CurateIO) -> dict:
    from components.curate.run import run_curate

    summary = run_curate(cfg, io)  # bad input or a failed validation suite raise ValueError naming the dataset
    print(json.dumps({"counts": summary["counts"], "quarantined": summary["pmc_vqa"]["quarantined"],
                      "synthetic": summary["synthetic"]}, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    return launch(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
