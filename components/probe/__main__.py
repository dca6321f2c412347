"""Probe launcher: linear probes on the frozen vision tower of a Qwen2.5-VL-family checkpoint, per MedMNIST task.

    python -m components.probe --model Qwen/Qwen2.5-VL-7B-Instruct --data out/medmnist_data \
        --flags all --pooling mean --epochs 20 --image-size 224 --batch-size 64 --seed 0 \
        --out out/probe_report --metrics-json out/probe_metrics.json

Every flag except --model/--data/--out/--metrics-json is a field of components.probe.config.ProbeConfig (same name,
dashes for underscores; --model and --data fill model_ref and data). --out is replaced atomically and holds
probe.json, table.md, probe_accuracy.png, metrics.json and lineage.json. Features are cached under --cache-dir
(default $MEDBRIDGE_CACHE/probe_features) and reused when the same checkpoint and npz files come again.
"""

from __future__ import annotations

import argparse
import json
import sys

from components.common.cli import add_config_flags
from components.probe.config import ProbeConfig

_ALIASES = {"model_ref": "--model", "data": "--data"}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m components.probe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_flags(parser, ProbeConfig, aliases=_ALIASES)
    parser.add_argument("--out", required=True, help="probe_report output directory (replaced atomically)")
    parser.add_argument("--metrics-json", default=None, help="also write the summary metrics JSON here (for kfp Metrics)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from components.probe.run import run_probe

    args = vars(make_parser().parse_args(argv))
    out, metrics_json = args.pop("out"), args.pop("metrics_json")
    try:
        cfg = ProbeConfig(**args)
    except ValueError as e:
        print(f"probe: {e}", file=sys.stderr)
        return 2
    try:
        probe = run_probe(cfg, out, metrics_json=metrics_json)
    except (FileNotFoundError, ValueError) as e:
        print(f"probe: {e}", file=sys.stderr)
        return 2
    print(json.dumps({f: {"accuracy": v["accuracy"], "perception_limited": v["perception_limited"]}
                      for f, v in probe["tasks"].items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
