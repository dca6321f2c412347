"""Diagnose launcher: Acc@1 vs Pass@k of a Qwen2.5-VL-family checkpoint on an MCQ set, and the branch decision.

    python -m components.diagnose --model Qwen/Qwen2.5-VL-7B-Instruct --data out/diag_set \
        --target-data out/rl_diag_set --probe out/probe_report --k 16 --tau 0.5 --chance-ceiling 0.5 \
        --prompt-format think --max-new-tokens 2048 --temperature 0.7 --top-p 0.9 --backend vllm \
        --min-pixels 1003520 --max-pixels 12845056 --judge-model Qwen/Qwen2.5-VL-32B-Instruct --judge-mode all \
        --force-branch auto --seed 0 --out out/diagnosis --metrics-json out/diagnose_metrics.json

    # after the bridge: the same measurement of the SFT model gates GRPO (proceed / stop)
    python -m components.diagnose --model out/sft_model --data out/diag_set --target-data out/rl_diag_set \
        --after-bridge --out out/rediagnosis ...

Flags are the fields of components.diagnose.config.DiagnoseConfig (knobs; `--config FILE.yaml` sets them from a
file) and DiagnoseIO (inputs and outputs), with dashes for underscores. --out is replaced atomically and holds
diagnosis.json, table.md, passk_curves.png, passk_<group>.png, samples.jsonl, metrics.json and lineage.json
(schema: components/diagnose/README.md). The chosen branch ("bridge" or "sharpen"), or with --after-bridge the gate
("proceed" or "stop"), is the last line on stdout.
"""

from __future__ import annotations

from components.common.cli import StepParser, launch
from components.diagnose.config import DiagnoseConfig, DiagnoseIO

PROG = "python -m components.diagnose"


def make_parser() -> StepParser:
    return StepParser(PROG, __doc__, DiagnoseConfig, DiagnoseIO)


def run(cfg: DiagnoseConfig, io: DiagnoseIO) -> dict:
    from components.diagnose.run import run_diagnosis

    diag = run_diagnosis(cfg, io)
    dec = diag["decision"]
    print(f"decision: {dec['rule']}")
    for group, d in dec["per_modality"].items():
        print(f"  {group}: {d['rule']}")
    if "gate" in diag:
        print(f"gate after the bridge: {diag['gate']['rule']}")
        print(diag["gate"]["outcome"])
    else:
        print(dec["branch"])
    return diag


def main(argv: list[str] | None = None) -> int:
    return launch(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
