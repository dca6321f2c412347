"""Evaluate the trained and the base model on the benchmarks and on MedMNIST transfer; write the run's final report.

    python -m components.evaluate \\
        --model runs/grpo/model --base-model Qwen/Qwen2.5-VL-7B-Instruct \\
        --eval-set runs/curate/eval_set --diagnosis runs/diagnose/diagnosis \\
        --probe-report runs/probe/probe_report --curation-report runs/curate/curation_report \\
        --benchmarks-root s3://medbridge-data/benchmarks --benchmarks pmc-vqa,mmmu-med,medxpertqa-mm,pathvqa,slake,vqa-rad \\
        --train-task pmc-vqa --k 16 --prompt-format think --max-new-tokens 256 \\
        --out-results runs/evaluate/results --out-report runs/evaluate/report.html

Writes the results directory (results.json, report.md, report.html, metrics.json, samples.jsonl with every
completion, benchmarks/<name>/ with the exact questions asked, lineage.json) and the self-contained HTML report.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from pathlib import Path

from components.common.io import atomic_dir, atomic_write_text, write_json, write_jsonl
from components.common.lineage import write_lineage
from components.common.cli import add_config_flags
from components.evaluate.config import EvalConfig

METRICS_FILE = "metrics.json"


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m components.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    io = p.add_argument_group("inputs and outputs")
    io.add_argument("--model", required=True, help="trained model: directory, hub id or s3:// URI")
    io.add_argument("--base-model", required=True, help="base model it was trained from (same forms)")
    io.add_argument("--eval-set", default="", help="MedMNIST MCQ dataset dir (test split) for the transfer table")
    io.add_argument("--diagnosis", default="", help="diagnosis artifact dir (diagnosis.json, passk_curves.png)")
    io.add_argument("--probe-report", default="", help="probe artifact dir (probe.json, table.md)")
    io.add_argument("--curation-report", default="", help="curation report dir")
    io.add_argument(
        "--benchmarks-root", default="", help="local dir or s3:// URI holding the benchmarks in their public layouts"
    )
    io.add_argument("--out-results", required=True, help="results directory to write")
    io.add_argument("--out-report", required=True, help="HTML report file to write")
    cfg = p.add_argument_group("evaluation (EvalConfig)")
    add_config_flags(cfg, EvalConfig)
    return p


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    return EvalConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(EvalConfig)})


def metrics_for_kfp(results: dict) -> dict[str, float]:
    """Flat numbers for the kfp Metrics output: trained Acc@1 per benchmark and per regime, deltas, flag count."""
    out: dict[str, float] = {}
    for name, e in results.get("benchmarks", {}).items():
        if e["trained"].get("acc_at_1") is not None:
            out[f"acc_at_1_{name}"] = round(float(e["trained"]["acc_at_1"]), 6)
            out[f"delta_acc_at_1_{name}"] = round(float(e["delta"]["acc_at_1"]["value"]), 6)
    for regime, e in results.get("transfer", {}).get("regimes", {}).items():
        out[f"acc_at_1_{regime}"] = round(float(e["trained"]["acc_at_1"]), 6)
    out["overfit_flags"] = float(len(results.get("overfit", {}).get("flags", [])))
    return out


def run(args: argparse.Namespace) -> dict:
    from components.evaluate.evaluation import evaluate_models
    from components.evaluate.report import build_context, render_html, render_markdown

    cfg = config_from_args(args)
    for name in ("eval_set", "diagnosis", "probe_report", "curation_report"):
        value = getattr(args, name)
        if value and not Path(value).is_dir():
            raise FileNotFoundError(f"--{name.replace('_', '-')} {value}: no such directory")
    inputs = {
        "model": args.model,
        "base_model": args.base_model,
        "eval_set": args.eval_set,
        "diagnosis": args.diagnosis,
        "probe_report": args.probe_report,
        "curation_report": args.curation_report,
        "benchmarks_root": args.benchmarks_root,
    }
    inputs = {k: v for k, v in inputs.items() if v}
    lineage_dirs = {k: v for k, v in inputs.items() if k not in ("base_model", "benchmarks_root")}
    with atomic_dir(args.out_results) as tmp:
        results, samples = evaluate_models(
            cfg, args.model, args.base_model, args.eval_set or None, args.benchmarks_root or None, tmp
        )
        n_flags = len(results["overfit"]["flags"])
        summary = (
            f"scored {len(results['benchmarks'])} benchmark(s) and {len(results['transfer']['tasks'])} MedMNIST task(s), "
            f"base vs trained, K={cfg.k}; overfit flags: {n_flags}"
        )
        own = {
            "step": "evaluate",
            "artifact": "results",
            "sha256": None,
            "summary": summary,
            "params": dataclasses.asdict(cfg),
        }
        context = functools.partial(
            build_context,
            results,
            diagnosis_dir=args.diagnosis or None,
            probe_dir=args.probe_report or None,
            curation_dir=args.curation_report or None,
            input_dirs=lineage_dirs,
            own_lineage=own,
            base_model_ref=args.base_model,
        )
        ctx = context()
        results["synthetic"] = ctx["synthetic"]
        results["synthetic_reasons"] = ctx["synthetic_reasons"]
        own["synthetic"] = ctx["synthetic"]
        write_json(tmp / "results.json", results)
        write_jsonl(tmp / "samples.jsonl", samples)
        write_json(tmp / METRICS_FILE, metrics_for_kfp(results))
        atomic_write_text(tmp / "report.md", render_markdown(ctx))
        # report.html beside it for a person who opens the folder; inside the hashed directory it cannot name the
        # directory's own hash (lineage.json beside it does).
        atomic_write_text(tmp / "report.html", render_html(ctx))
        lineage = write_lineage(
            tmp,
            step="evaluate",
            artifact="results",
            inputs=inputs,
            params=dataclasses.asdict(cfg),
            summary=summary,
            synthetic=ctx["synthetic"],
        )
    # The HTML report carries the results' final hash, so it is written once the results directory is in place.
    own.update({k: lineage[k] for k in ("sha256", "code_version", "created_at")})
    atomic_write_text(args.out_report, render_html(context()))
    print(
        f"[evaluate] {summary}\n[evaluate] report: {args.out_report}\n[evaluate] results: {args.out_results}",
        flush=True,
    )
    return results


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
