"""Probe launcher: linear probes on the frozen vision tower of a Qwen2.5-VL-family checkpoint, per MedMNIST task.

    python -m components.probe --model Qwen/Qwen2.5-VL-7B-Instruct --data out/medmnist_data \
        --flags all --pooling mean --epochs 20 --image-size 224 --batch-size 64 --seed 0 \
        --out out/probe_report --metrics-json out/probe_metrics.json

Flags are the fields of components.probe.config.ProbeConfig (knobs; `--config FILE.yaml` sets them from a file) and
ProbeIO (inputs and outputs), with dashes for underscores. --out is replaced atomically and holds
probe.json, table.md, probe_accuracy.png, metrics.json and lineage.json. Features are cached under --cache-dir
(default $MEDBRIDGE_CACHE/probe_features) and reused when the same checkpoint and npz files come again.
"""

from __future__ import annotations

import json

from components.common.cli import StepParser, launch
from components.probe.config import ProbeConfig, ProbeIO

PROG = "python -m components.probe"


def make_parser() -> StepParser:
    return StepParser(PROG, __doc__, ProbeConfig, ProbeIO)


def run(cfg: ProbeConfig, io: ProbeIO) -> dict:
    from components.probe.run import run_probe

    probe = run_probe(cfg, io)
    print(json.dumps({f: {"accuracy": v["accuracy"], "perception_limited": v["perception_limited"]}
                      for f, v in probe["tasks"].items()}, indent=2))
    return probe


def main(argv: list[str] | None = None) -> int:
    return launch(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
