"""Score the trained and the base model on the benchmarks and on the MedMNIST eval set; build the results dict.

    results = evaluate_models(cfg, model_ref, base_model_ref, eval_set_dir, benchmarks_root, work_dir)

For every question set (each benchmark, each MedMNIST task of the eval set) and both models: one greedy completion
(Acc@1) and K sampled ones (the Pass@k curve), scored by option letter. Deltas are trained minus base on the same
questions with paired bootstrap intervals. MedMNIST tasks are grouped into transfer regimes relative to
`cfg.train_task`, and the "wins its benchmark, loses transfer" flag is raised from the deltas.
"""

from __future__ import annotations

import dataclasses
import gc
from pathlib import Path
from typing import Any

from components.common.medmnist_tasks import TASKS
from components.common.prompts import PROMPT_VERSION, build_messages
from components.common.records import MCQRecord, load_records, open_image
from components.common.sampling import Prompt, SamplingConfig, make_backend
from components.evaluate.benchmark import BENCHMARKS, parse_benchmarks, prepare_benchmark
from components.evaluate.config import EvalConfig
from components.evaluate.scoring import QuestionOutcome, aggregate, paired_delta, score_question
from components.evaluate.transfer import REGIMES, flag_benchmark_overfit, regime_for

MODELS = ("base", "trained")


@dataclasses.dataclass
class QuestionSet:
    name: str  # benchmark name or MedMNIST flag
    kind: str  # "benchmark" | "eval_set"
    dataset_dir: Path
    records: list[MCQRecord]
    scorer: str = "option_letter"
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


def load_question_sets(
    cfg: EvalConfig, eval_set: str | Path | None, benchmarks_root: str | None, work_dir: Path
) -> list[QuestionSet]:
    """The benchmarks (converted to MCQ dataset dirs under work_dir/benchmarks) and the eval set split by task."""
    sets: list[QuestionSet] = []
    names = parse_benchmarks(cfg.benchmarks)
    if names and not benchmarks_root:
        raise ValueError(
            f"benchmarks {names} requested but no benchmarks root given; pass --benchmarks-root or --benchmarks none"
        )
    for name in names:
        spec = BENCHMARKS[name]
        records, stats = prepare_benchmark(
            spec, benchmarks_root, work_dir / "benchmarks" / name, max_questions=cfg.max_questions, seed=cfg.seed
        )
        if not records:
            raise ValueError(
                f"benchmark {name!r}: no closed-form question survived the filter ({stats.excluded}); check its files"
            )
        info = {
            "hf_dataset": spec.hf_dataset,
            "split": spec.split,
            "description": spec.description,
            **dataclasses.asdict(stats),
        }
        sets.append(QuestionSet(name, "benchmark", work_dir / "benchmarks" / name, records, spec.scorer, info))
    if eval_set:
        records = load_records(eval_set)
        by_task: dict[str, list[MCQRecord]] = {}
        for r in records:
            by_task.setdefault(r.task, []).append(r)
        for task, recs in by_task.items():
            group = recs[0].meta.get("group") or (TASKS[task].group if task in TASKS else None)
            regime = regime_for(task, cfg.train_task, group)
            info = {
                "group": group,
                "regime": regime.name,
                "shift": regime.shift,
                "name": TASKS[task].name if task in TASKS else task,
            }
            sets.append(QuestionSet(task, "eval_set", Path(eval_set), recs, "option_letter", info))
    if not sets:
        raise ValueError("nothing to evaluate: give --eval-set and/or --benchmarks with --benchmarks-root")
    return sets


def _run_set(backend, qs: QuestionSet, cfg: EvalConfig) -> tuple[list[QuestionOutcome], list[dict]]:
    """Greedy + K samples for every question of one set, from one prefill per prompt (`sample_and_greedy`)."""
    prompts = [Prompt(build_messages(r, cfg.prompt_format), open_image(qs.dataset_dir, r)) for r in qs.records]
    samples, greedy = backend.sample_and_greedy(prompts, cfg.k)
    outcomes = [score_question(r, g, s, qs.scorer) for r, g, s in zip(qs.records, greedy, samples)]
    rows = [
        {
            "set": qs.name,
            "id": o.id,
            "answer": o.answer,
            "greedy": g,
            "greedy_letter": o.greedy_letter,
            "greedy_correct": o.greedy_correct,
            "samples": s,
            "sample_letters": o.sample_letters,
            "n_correct": o.n_correct,
        }
        for o, g, s in zip(outcomes, greedy, samples)
    ]
    return outcomes, rows


def score_model(
    model_ref: str, sets: list[QuestionSet], cfg: EvalConfig, backend=None
) -> tuple[dict[str, list[QuestionOutcome]], list[dict]]:
    """Outcomes per set name for one model (loaded once), and one row per question with every completion."""
    if backend is None:
        scfg = SamplingConfig(
            backend=cfg.backend,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_new_tokens=cfg.max_new_tokens,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            device=cfg.device,
        )
        backend = make_backend(scfg, model_ref)
    outcomes: dict[str, list[QuestionOutcome]] = {}
    rows: list[dict] = []
    for qs in sets:
        print(f"[evaluate] {model_ref}: {qs.name} ({len(qs.records)} questions)", flush=True)
        outcomes[qs.name], set_rows = _run_set(backend, qs, cfg)
        rows += set_rows
    del backend
    gc.collect()
    return outcomes, rows


def _entry(base: list[QuestionOutcome], trained: list[QuestionOutcome], cfg: EvalConfig) -> dict:
    return {
        "base": aggregate(base, cfg.k, cfg.n_boot, cfg.seed),
        "trained": aggregate(trained, cfg.k, cfg.n_boot, cfg.seed),
        "delta": paired_delta(base, trained, cfg.k, cfg.n_boot, cfg.seed),
    }


def build_results(
    cfg: EvalConfig, sets: list[QuestionSet], outcomes: dict[str, dict[str, list[QuestionOutcome]]]
) -> dict:
    """Benchmark table, transfer table (per task and per regime, pooled questions), overfit flags."""
    benchmarks: dict[str, dict] = {}
    tasks: dict[str, dict] = {}
    for qs in sets:
        entry = {**qs.info, **_entry(outcomes["base"][qs.name], outcomes["trained"][qs.name], cfg)}
        (benchmarks if qs.kind == "benchmark" else tasks)[qs.name] = entry
    regimes: dict[str, dict] = {}
    for regime in REGIMES:
        members = [qs.name for qs in sets if qs.kind == "eval_set" and qs.info["regime"] == regime]
        if members:
            pooled = {m: [o for name in members for o in outcomes[m][name]] for m in MODELS}
            regimes[regime] = {"tasks": members, **_entry(pooled["base"], pooled["trained"], cfg)}

    flags: list[dict] = []
    for metric in ("acc_at_1", "pass_at_k"):
        delta = lambda e, metric=metric: e["delta"][metric]["value"]  # noqa: E731
        bench = {n: delta(e) for n, e in benchmarks.items() if n == cfg.train_task}
        bench.update({n: delta(e) for n, e in tasks.items() if n == cfg.train_task})
        transfer = {r: delta(e) for r, e in regimes.items() if r != "in-domain"}
        transfer.update({f"benchmark {n}": delta(e) for n, e in benchmarks.items() if n != cfg.train_task})
        flags += flag_benchmark_overfit(bench, transfer, cfg.overfit_margin, metric=metric)
    in_domain_found = cfg.train_task in benchmarks or cfg.train_task in tasks
    return {
        "k": cfg.k,
        "prompt_format": cfg.prompt_format,
        "prompt_version": PROMPT_VERSION,
        "sampling": {
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "max_new_tokens": cfg.max_new_tokens,
            "backend": cfg.backend,
            "n": cfg.k,
            "seed": cfg.seed,
        },
        "train_task": cfg.train_task,
        "benchmarks": benchmarks,
        "transfer": {"train_task": cfg.train_task, "tasks": tasks, "regimes": regimes},
        "overfit": {
            "margin": cfg.overfit_margin,
            "flags": flags,
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
) -> tuple[dict, list[dict]]:
    """Run everything; return (results dict, per-question sample rows). `backends` injects ready backends (tests)."""
    work_dir = Path(work_dir)
    sets = load_question_sets(cfg, eval_set, benchmarks_root, work_dir)
    refs = {"base": base_model_ref, "trained": model_ref}
    outcomes: dict[str, dict[str, list[QuestionOutcome]]] = {}
    sample_rows: list[dict] = []
    for m in MODELS:
        outcomes[m], rows = score_model(refs[m], sets, cfg, backend=(backends or {}).get(m))
        sample_rows += [{"model": m, **r} for r in rows]
    results = build_results(cfg, sets, outcomes)
    results["models"] = refs
    return results, sample_rows
