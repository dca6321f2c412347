"""Diagnose launcher: Acc@1 vs Pass@k of a Qwen2.5-VL-family checkpoint on an MCQ set, and the branch decision.

    python -m components.diagnose --model Qwen/Qwen2.5-VL-7B-Instruct --data out/diag_set \
        --probe out/probe_report --k 16 --tau 0.5 --prompt-format think --max-new-tokens 256 \
        --temperature 0.7 --top-p 0.9 --backend vllm --force-branch auto --seed 0 \
        --out out/diagnosis --metrics-json out/diagnose_metrics.json

Every flag except --model/--data/--out/--metrics-json is a field of components.diagnose.config.DiagnoseConfig
(same name, dashes for underscores; --model fills model_ref). --out is replaced atomically and holds
diagnosis.json, table.md, passk_curves.png, passk_<group>.png, samples.jsonl, metrics.json and lineage.json
(schema: components/diagnose/README.md). The chosen branch ("bridge" or "sharpen") is the last line on stdout.
"""

from __future__ import annotations

import argparse
import sys

from components.common.cli import add_config_flags
from components.diagnose.config import DiagnoseConfig

_ALIASES = {"model_ref": "--model", "data": "--data"}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m components.diagnose", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_flags(parser, DiagnoseConfig, aliases=_ALIASES)
    parser.add_argument("--out", required=True, help="diagnosis output directory (replaced atomically)")
    parser.add_argument("--metrics-json", default=None, help="also write the flat metrics JSON here (for kfp Metrics)")
    parser.add_argument("--branch-file", default=None, help="also write the chosen branch to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(make_parser().parse_args(argv))
    out, metrics_json, branch_file = args.pop("out"), args.pop("metrics_json"), args.pop("branch_file")
    try:
        cfg = DiagnoseConfig(**args)
    except ValueError as e:
        print(f"diagnose: {e}", file=sys.stderr)
        return 2
    from components.diagnose.run import run_diagnosis

    try:
        diag = run_diagnosis(cfg, out, metrics_json=metrics_json)
    except (FileNotFoundError, ValueError) as e:
        print(f"diagnose: {e}", file=sys.stderr)
        return 2
    dec = diag["decision"]
    print(f"decision: {dec['rule']}")
    for group, d in dec["per_modality"].items():
        print(f"  {group}: {d['rule']}")
    if branch_file:
        from components.common.io import atomic_write_text

        atomic_write_text(branch_file, dec["branch"])
    print(dec["branch"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
