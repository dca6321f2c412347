"""Evaluate the trained and the base model on the benchmarks and on MedMNIST transfer; write the run's final report.

    python -m components.evaluate \\
        --model runs/grpo/model --sft-model runs/sft/model --base-model Qwen/Qwen2.5-VL-7B-Instruct \\
        --eval-set runs/curate/eval_set --diagnosis runs/diagnose/diagnosis --rediagnosis runs/rediagnose/diagnosis \\
        --probe-report runs/probe/probe_report --curation-report runs/curate/curation_report \\
        --benchmarks-root s3://medbridge-data/benchmarks --benchmarks pmc-vqa,mmmu-med,medxpertqa-mm,pathvqa,slake,vqa-rad \\
        --train-task pmc-vqa --k 16 --prompt-format think --max-new-tokens 2048 --temperature 0.7 --top-p 0.9 \\
        --backend vllm --min-pixels 1003520 --max-pixels 12845056 \\
        --judge-model Qwen/Qwen2.5-VL-32B-Instruct --judge-mode all \\
        --out-results runs/evaluate/results --out-report runs/evaluate/report.html

Flags are the fields of components.evaluate.config.EvalConfig (knobs; `--config FILE.yaml` sets them from a file)
and EvalIO (inputs and outputs), with dashes for underscores. Writes the results directory (results.json, report.md,
report.html, metrics.json, samples.jsonl with every completion, benchmarks/<name>/ with the exact questions asked,
lineage.json) and the self-contained HTML report. With --sft-model the bridge's SFT model is scored too (base -> SFT
-> SFT+GRPO, paired); --final-stage sft says the run stopped after the bridge (the re-diagnosis gate).
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
from pathlib import Path

from components.common.cli import StepParser, launch
from components.common.io import atomic_dir, atomic_write_text, write_json, write_jsonl
from components.common.lineage import inputs_synthetic, write_lineage
from components.common.privacy import private_report, private_rows
from components.common.schema import stamp
from components.evaluate.config import EvalConfig, EvalIO

PROG = "python -m components.evaluate"
METRICS_FILE = "metrics.json"


def make_parser() -> StepParser:
    return StepParser(PROG, __doc__, EvalConfig, EvalIO)


def sft_tasks_of(model_dir: str) -> list[str]:
    """The tasks an SFT model trained on, from its metrics.json ("tasks"); [] for any other model."""
    import json

    path = Path(model_dir) / "metrics.json" if model_dir else None
    if path is None or not path.is_file():
        return []
    try:
        tasks = json.loads(path.read_text()).get("tasks") or []
    except (ValueError, AttributeError):
        raise ValueError(f"{path}: not a JSON object with a 'tasks' list (the SFT step's metrics)") from None
    return [str(t) for t in tasks]


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
    out["transfer_checks"] = float(results.get("overfit", {}).get("m", 0))
    return out


def _call(build, *args, **kwargs):
    return build(*args, **kwargs)


def private_context(build, *args, **kwargs):
    """The report's context with the privacy flag on (components.common.privacy.private_report)."""
    return private_report(build(*args, **kwargs))


def run(cfg: EvalConfig, io: EvalIO) -> dict:
    from components.evaluate.evaluation import evaluate_models
    from components.evaluate.report import build_context, render_html, render_markdown

    inputs = {
        "model": io.model,
        "base_model": io.base_model,
        "sft_model": io.sft_model,
        "eval_set": io.eval_set,
        "diagnosis": io.diagnosis,
        "rediagnosis": io.rediagnosis,
        "probe_report": io.probe_report,
        "curation_report": io.curation_report,
        "benchmarks_root": io.benchmarks_root,
    }
    inputs = {k: v for k, v in inputs.items() if v}
    lineage_dirs = {k: v for k, v in inputs.items() if Path(v).is_dir()}  # whose lineage the report reads
    with atomic_dir(io.out_results) as tmp:
        sft_tasks = sft_tasks_of(io.sft_model or (io.model if cfg.final_stage == "sft" else ""))
        results, samples = evaluate_models(
            cfg, io.model, io.base_model, io.eval_set or None, io.benchmarks_root or None, tmp,
            sft_model_ref=io.sft_model, sft_tasks=sft_tasks,
        )
        n_flags = len(results["overfit"]["flags"])
        final = "SFT" if cfg.final_stage == "sft" else "final"
        stages = " -> ".join({"trained": final}.get(m, m) for m in results.get("stages", ("base", "trained")))
        summary = (
            f"scored {len(results['benchmarks'])} benchmark set(s), {len(results.get('open', {}))} open-ended set(s) and "
            f"{len(results['transfer']['tasks'])} MedMNIST task(s), {stages}, K={cfg.k}; transfer-guard flags: {n_flags}"
        )
        own = {
            "step": "evaluate",
            "artifact": "results",
            "sha256": None,
            "summary": summary,
            "params": dataclasses.asdict(cfg),
            "synthetic": inputs_synthetic(inputs),  # what write_lineage below records for this artifact
        }
        context = functools.partial(
            private_context if cfg.private else _call,
            build_context,
            results,
            diagnosis_dir=io.diagnosis or None,
            rediagnosis_dir=io.rediagnosis or None,
            probe_dir=io.probe_report or None,
            curation_dir=io.curation_report or None,
            input_dirs=lineage_dirs,
            own_lineage=own,
            base_model_ref=io.base_model,
        )
        ctx = context()
        results["synthetic"] = ctx["synthetic"]
        results["synthetic_reasons"] = ctx["synthetic_reasons"]
        write_json(tmp / "results.json", stamp(results, "results"))
        write_jsonl(tmp / "samples.jsonl", private_rows(samples) if cfg.private else samples)
        if cfg.private:  # no copy of the questions asked (texts and images) beside the results
            shutil.rmtree(tmp / "benchmarks", ignore_errors=True)
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
        )
    # The HTML report carries the results' final hash, so it is written once the results directory is in place.
    own.update({k: lineage[k] for k in ("sha256", "code_version", "created_at")})
    atomic_write_text(io.out_report, render_html(context()))
    print(
        f"[evaluate] {summary}\n[evaluate] report: {io.out_report}\n[evaluate] results: {io.out_results}",
        flush=True,
    )
    return results


def main(argv: list[str] | None = None) -> int:
    return launch(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
