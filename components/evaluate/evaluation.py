"""Score the base model, the bridge's SFT model (when there is one) and the final model on the benchmarks and on the
MedMNIST eval set; build the results dict.

    results, rows = evaluate_models(cfg, model_ref, base_model_ref, eval_set_dir, benchmarks_root, work_dir,
                                    sft_model_ref="runs/x/sft/model", sft_tasks=["pathmnist"])

Every model is measured by the one harness (`components.common.harness`: the same prompt, sampling settings, backend,
pixel bounds and answer reading as the diagnosis), on the same questions: one greedy completion (Acc@1) and K
sampled ones (the Pass@k curve) per question. Open-ended benchmark questions are scored apart (exact match / token
F1, or the judge). Deltas are paired on the same questions with bootstrap intervals: base -> final always, and in
the bridge branch base -> SFT and SFT -> RL too, so that the bridge's and RL's gains are kept apart. MedMNIST
tasks are grouped into transfer regimes relative to `cfg.train_task` (tasks the SFT step trained on are
in-domain), and the transfer guard decides "wins its benchmark, loses transfer" on the paired intervals with Holm's
correction (`transfer.transfer_guard`).
"""

from __future__ import annotations

import dataclasses
import gc
from pathlib import Path
from typing import Any

from components.common.benchmark import BENCHMARKS, parse_benchmarks, prepare_benchmark
from components.common.harness import QuestionOutcome, measure, measure_open, open_judge
from components.common.medmnist_tasks import QUESTION_FORMS, TASKS
from components.common.prompts import PROMPT_VERSION
from components.common.records import MCQRecord, OpenRecord, load_open_records, load_records
from components.common.sampling import make_backend
from components.evaluate.config import EvalConfig
from components.evaluate.scoring import aggregate, stage_deltas
from components.evaluate.transfer import REGIMES, regime_for, transfer_guard

MODELS = ("base", "sft", "trained")


@dataclasses.dataclass
class QuestionSet:
    name: str  # benchmark name (or <combined set>/<benchmark>) or MedMNIST flag
    kind: str  # "benchmark" | "open" | "eval_set"
    dataset_dir: Path
    records: list[MCQRecord] | list[OpenRecord]
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


def _by_task(records: list) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in records:
        out.setdefault(r.task, []).append(r)
    return out


def load_question_sets(
    cfg: EvalConfig, eval_set: str | Path | None, benchmarks_root: str | None, work_dir: Path, sft_tasks=()
) -> list[QuestionSet]:
    """The benchmarks (converted to dataset dirs under work_dir/benchmarks; multiple-choice and open-ended questions
    as separate sets) and the eval set split by task."""
    sets: list[QuestionSet] = []
    names = parse_benchmarks(cfg.benchmarks)
    if names and not benchmarks_root:
        raise ValueError(
            f"benchmarks {names} requested but no benchmarks root given; pass --benchmarks-root or --benchmarks none"
        )
    for name in names:
        spec = BENCHMARKS[name]
        folder = work_dir / "benchmarks" / name
        records, stats = prepare_benchmark(spec, benchmarks_root, folder, max_questions=cfg.max_questions, seed=cfg.seed)
        opened = load_open_records(folder)
        if not records and not opened:
            raise ValueError(f"benchmark {name!r}: no question survived the filter ({stats.excluded}); check its files")
        info = {"hf_dataset": spec.hf_dataset, "split": spec.split, "description": spec.description, "source": name,
                **dataclasses.asdict(stats)}
        for task, recs in _by_task(records).items():
            sets.append(QuestionSet(task, "benchmark", folder, recs, {**info, "used": len(recs)}))
        for task, recs in _by_task(opened).items():  # named apart: a benchmark may hold both kinds
            sets.append(QuestionSet(f"{task} (open)", "open", folder, recs, {**info, "used": len(recs)}))
    if eval_set:
        for task, recs in _by_task(load_records(eval_set)).items():
            group = recs[0].meta.get("group") or (TASKS[task].group if task in TASKS else None)
            regime = regime_for(task, cfg.train_task, group, sft_tasks)
            info = {
                "group": group,
                "regime": regime.name,
                "shift": regime.shift,
                "name": TASKS[task].name if task in TASKS else task,
                "sft_trained": task in set(sft_tasks),
                "question_form": QUESTION_FORMS.get(task, ""),
            }
            sets.append(QuestionSet(task, "eval_set", Path(eval_set), recs, info))
    if not sets:
        raise ValueError("nothing to evaluate: give --eval-set and/or --benchmarks with --benchmarks-root")
    return sets


def score_model(
    model_ref: str, sets: list[QuestionSet], cfg: EvalConfig, backend=None, judge=None
) -> tuple[dict[str, list[QuestionOutcome]], list[dict]]:
    """Outcomes per set name for one model (loaded once), and one row per question with every completion."""
    if backend is None:
        backend = make_backend(cfg.sampling(), model_ref)
    outcomes: dict[str, list[QuestionOutcome]] = {}
    rows: list[dict] = []
    for qs in sets:
        print(f"[evaluate] {model_ref}: {qs.name} ({len(qs.records)} {qs.kind} questions)", flush=True)
        if qs.kind == "open":
            outcomes[qs.name], set_rows = measure_open(qs.records, qs.dataset_dir, backend, cfg, judge=judge)
        else:
            outcomes[qs.name], set_rows = measure(qs.records, qs.dataset_dir, backend, cfg, judge=judge)
        rows += [{"set": qs.name, **r} for r in set_rows]
    del backend
    gc.collect()
    return outcomes, rows


def _entry(per_model: dict[str, list[QuestionOutcome]], cfg: EvalConfig) -> dict:
    kw = dict(n_boot=cfg.n_boot, seed=cfg.seed)
    entry: dict[str, Any] = {m: aggregate(o, cfg.k, ceiling=cfg.chance_ceiling, **kw) for m, o in per_model.items()}
    deltas = stage_deltas(per_model, cfg.k, margin=cfg.overfit_margin, **kw)
    entry["delta"] = deltas["base_to_final"]
    if "sft" in per_model:
        entry["deltas"] = deltas
    return entry


def build_results(
    cfg: EvalConfig, sets: list[QuestionSet], outcomes: dict[str, dict[str, list[QuestionOutcome]]]
) -> dict:
    """Benchmark table, open-ended table, transfer table (per task and per regime, pooled questions), the guard."""
    models = [m for m in MODELS if m in outcomes]
    benchmarks: dict[str, dict] = {}
    open_sets: dict[str, dict] = {}
    tasks: dict[str, dict] = {}
    for qs in sets:
        entry = {**qs.info, **_entry({m: outcomes[m][qs.name] for m in models}, cfg)}
        {"benchmark": benchmarks, "open": open_sets, "eval_set": tasks}[qs.kind][qs.name] = entry
    regimes: dict[str, dict] = {}
    for regime in REGIMES:
        members = [qs.name for qs in sets if qs.kind == "eval_set" and qs.info["regime"] == regime]
        if members:
            pooled = {m: [o for name in members for o in outcomes[m][name]] for m in models}
            regimes[regime] = {"tasks": members, **_entry(pooled, cfg)}

    bench = {n: e["delta"] for n, e in benchmarks.items() if n == cfg.train_task}
    bench.update({n: e["delta"] for n, e in tasks.items() if n == cfg.train_task})
    transfer = {r: e["delta"] for r, e in regimes.items() if r != "in-domain"}
    transfer.update({f"benchmark {n}": e["delta"] for n, e in benchmarks.items() if n != cfg.train_task})
    guard = transfer_guard(bench, transfer, cfg.overfit_margin, cfg.alpha)
    in_domain_found = bool(bench)
    truncation = {}
    for m in models:
        every = [o for qs in sets for o in outcomes[m][qs.name]]
        n_samples = sum(len(o.sample_truncated) for o in every)
        truncation[m] = {
            "samples": sum(o.sample_truncated.count(True) for o in every) / n_samples if n_samples else 0.0,
            "greedy": sum(o.greedy_truncated for o in every) / len(every) if every else 0.0,
        }
    return {
        "k": cfg.k,
        "prompt_format": cfg.prompt_format,
        "prompt_version": PROMPT_VERSION,
        "harness": cfg.record(),
        "sampling": {
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "max_new_tokens": cfg.max_new_tokens,
            "backend": cfg.backend,
            "n": cfg.n_samples,
            "seed": cfg.seed,
            "min_pixels": cfg.min_pixels,
            "max_pixels": cfg.max_pixels,
            "judge_model": cfg.judge_model,
            "judge_mode": cfg.judge_mode,
        },
        "train_task": cfg.train_task,
        "final_stage": cfg.final_stage,
        "stages": models,
        "truncation": truncation,
        "benchmarks": benchmarks,
        "open": open_sets,
        "transfer": {"train_task": cfg.train_task, "tasks": tasks, "regimes": regimes},
        "overfit": {
            **guard,
            "compared": "base -> final model",
            "checked": in_domain_found,
            "note": ""
            if in_domain_found
            else f"train_task {cfg.train_task!r} was not scored (not among the benchmarks or eval-set tasks): no in-domain delta to check",
        },
    }


def evaluate_models(
    cfg: EvalConfig,
    model_ref: str,
    base_model_ref: str,
    eval_set: str | Path | None,
    benchmarks_root: str | None,
    work_dir: str | Path,
    backends: dict[str, Any] | None = None,
    sft_model_ref: str = "",
    sft_tasks=(),
    judge=None,
) -> tuple[dict, list[dict]]:
    """Run everything; return (results dict, per-question sample rows). `backends` injects ready backends (tests)."""
    work_dir = Path(work_dir)
    if judge is None and cfg.judge_model:
        judge = open_judge(cfg)
    sets = load_question_sets(cfg, eval_set, benchmarks_root, work_dir, sft_tasks)
    refs = {"base": base_model_ref, "trained": model_ref}
    if sft_model_ref:
        refs["sft"] = sft_model_ref
    outcomes: dict[str, dict[str, list[QuestionOutcome]]] = {}
    sample_rows: list[dict] = []
    for m in MODELS:
        if m not in refs:
            continue
        outcomes[m], rows = score_model(refs[m], sets, cfg, backend=(backends or {}).get(m), judge=judge)
        sample_rows += [{"model": m, **r} for r in rows]
    results = build_results(cfg, sets, outcomes)
    results["models"] = refs
    results["sft_tasks"] = sorted(sft_tasks)
    return results, sample_rows
