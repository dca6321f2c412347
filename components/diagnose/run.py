"""The diagnosis, top to bottom: load questions -> sample K + greedy -> parse -> metrics -> decision -> outputs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from components.common.answers import JudgeItem, judge_answers, parse_answer
from components.common.artifacts import PROBE_FILE, read_artifact_json
from components.common.io import atomic_dir, atomic_write_text, write_json, write_jsonl
from components.common.lineage import inputs_synthetic, write_lineage
from components.common.medmnist_tasks import TASKS
from components.common.privacy import private_rows
from components.common.schema import stamp
from components.common.prompts import PROMPT_VERSION, build_messages
from components.common.records import MCQRecord, load_records, open_image
from components.common.sampling import Prompt, SamplingBackend, make_backend
from components.diagnose.config import DiagnoseConfig, DiagnoseIO
from components.diagnose.decision import decide
from components.diagnose.metrics import QuestionResult, summarise, summarise_by
from components.diagnose.report import markdown_table, plot_curves, slug

PROBE_KEYS = ("tasks",)
PROBE_TASK_KEYS = ("perception_limited",)


def group_of(rec: MCQRecord) -> str:
    """Modality group: the paper's grouping for MedMNIST tasks, else meta.group, else the record's modality."""
    if rec.task in TASKS:
        return TASKS[rec.task].group
    return str(rec.meta.get("group") or rec.modality)


def read_probe(probe_dir: str) -> list[str]:
    """Perception-limited task flags from a probe_report directory; errors name the file and the key."""
    if not probe_dir:
        return []
    path = Path(probe_dir) / PROBE_FILE
    probe = read_artifact_json(probe_dir, PROBE_FILE, "the probe step's probe_report")
    missing = [k for k in PROBE_KEYS if k not in probe]
    if missing:
        raise ValueError(f"{path}: missing key(s) {', '.join(missing)}; expected {{'tasks': {{flag: {{...}}}}, ...}}")
    if not isinstance(probe["tasks"], dict):
        raise ValueError(f"{path}: key 'tasks' must map task flags to results, got {type(probe['tasks']).__name__}")
    limited = []
    for flag, t in probe["tasks"].items():
        for key in PROBE_TASK_KEYS:
            if not isinstance(t, dict) or key not in t:
                raise ValueError(f"{path}: tasks.{flag} lacks the key {key!r}")
        if t["perception_limited"]:
            limited.append(flag)
    return limited


def load_questions(data: str, max_questions: int = 0) -> list[MCQRecord]:
    records = load_records(data)
    if not records:
        raise ValueError(f"{Path(data) / 'records.jsonl'}: the dataset holds no questions; nothing to diagnose")
    return records[:max_questions] if max_questions else records


def score(
    records: list[MCQRecord],
    samples: list[list[str]],
    greedy: list[str],
    judge: SamplingBackend | None = None,
) -> tuple[list[QuestionResult], list[dict]]:
    """Parse every completion, optionally ask the judge about unreadable ones; per-question results + sample rows."""
    parsed_s = [[parse_answer(c, r.options) for c in cs] for r, cs in zip(records, samples)]
    parsed_g = [parse_answer(g, r.options) for r, g in zip(records, greedy)]
    letters_s = [[p.letter for p in ps] for ps in parsed_s]
    letters_g = [p.letter for p in parsed_g]
    judged_s = [[False] * len(ps) for ps in parsed_s]
    judged_g = [False] * len(parsed_g)
    if judge is not None:
        todo = [(i, j) for i, ps in enumerate(parsed_s) for j, p in enumerate(ps) if p.letter is None]
        todo += [(i, -1) for i, p in enumerate(parsed_g) if p.letter is None]
        items = [
            JudgeItem(records[i].question, records[i].options, samples[i][j] if j >= 0 else greedy[i]) for i, j in todo
        ]
        for (i, j), letter in zip(todo, judge_answers(judge, items)):
            if j >= 0:
                letters_s[i][j], judged_s[i][j] = letter, letter is not None
            else:
                letters_g[i], judged_g[i] = letter, letter is not None
    results, rows = [], []
    for i, rec in enumerate(records):
        correct = [x == rec.answer for x in letters_s[i]]
        results.append(
            QuestionResult(
                id=rec.id,
                group=group_of(rec),
                task=rec.task,
                greedy_correct=letters_g[i] == rec.answer,
                sample_correct=correct,
                sample_letters=letters_s[i],
                sample_format_ok=[p.format_ok for p in parsed_s[i]],
                greedy_format_ok=parsed_g[i].format_ok,
            )
        )
        rows.append(
            {
                "id": rec.id,
                "task": rec.task,
                "group": group_of(rec),
                "answer": rec.answer,
                "greedy": {"completion": greedy[i], "letter": letters_g[i], "format_ok": parsed_g[i].format_ok,
                           "judged": judged_g[i], "correct": letters_g[i] == rec.answer},
                "samples": [
                    {"completion": c, "letter": letters_s[i][j], "format_ok": parsed_s[i][j].format_ok,
                     "judged": judged_s[i][j], "correct": correct[j]}
                    for j, c in enumerate(samples[i])
                ],
            }
        )
    return results, rows


def kfp_metrics(diag: dict) -> dict[str, float]:
    """Flat numeric metrics for the kfp Metrics artifact."""
    k = diag["k"]
    o = diag["overall"]
    out = {
        "n_questions": float(o["n"]),
        "acc_at_1": o["acc_at_1"],
        f"pass_at_{k}": o["pass_at_k"][str(k)],
        f"pass_at_{k}_ci_low": o["ci"]["pass_at_k"][0],
        f"pass_at_{k}_ci_high": o["ci"]["pass_at_k"][1],
        "gap": o["gap"],
        "format_failure_rate": o["format_failure_rate"],
        "mean_distinct_answers": o["mean_distinct_answers"],
        "tau": diag["tau"],
        "branch_is_bridge": 1.0 if diag["decision"]["branch"] == "bridge" else 0.0,
        "branch_forced": 1.0 if diag["decision"]["forced"] else 0.0,
    }
    for g, m in diag["per_modality"].items():
        out[f"{slug(g)}_acc_at_1"] = m["acc_at_1"]
        out[f"{slug(g)}_pass_at_{k}"] = m["pass_at_k"][str(k)]
    return out


def run_diagnosis(
    cfg: DiagnoseConfig,
    io: DiagnoseIO,
    *,
    backend: SamplingBackend | None = None,
    judge: SamplingBackend | None = None,
) -> dict:
    """Diagnose `io.model` on `io.data`; write the diagnosis directory at `io.out` (and the metrics / branch files
    when asked); return diagnosis.json's dict."""
    records = load_questions(io.data, cfg.max_questions)
    limited = read_probe(io.probe)
    inputs = {"model": io.model, "diag_set": io.data}
    if io.probe:
        inputs["probe_report"] = io.probe
    scfg = cfg.sampling()
    if backend is None:
        backend = make_backend(scfg, io.model)
    if judge is None and cfg.judge_model:
        judge = make_backend(dataclasses.replace(scfg, max_new_tokens=32), cfg.judge_model)

    prompts = [Prompt(build_messages(r, cfg.prompt_format), open_image(io.data, r)) for r in records]
    if hasattr(backend, "sample_and_greedy"):
        samples, greedy = backend.sample_and_greedy(prompts, cfg.n_samples)
    else:
        samples, greedy = backend.sample(prompts, cfg.n_samples), backend.greedy(prompts)
    if len(samples) != len(records) or any(len(s) != cfg.n_samples for s in samples) or len(greedy) != len(records):
        raise RuntimeError("the sampling backend returned the wrong number of completions")
    results, rows = score(records, samples, greedy, judge)

    kw = dict(n_boot=cfg.n_boot, seed=cfg.seed)
    overall = summarise(results, cfg.k, **kw)
    per_task = summarise_by(results, "task", cfg.k, **kw)
    per_modality = summarise_by(results, "group", cfg.k, **kw)
    decision = decide(overall, per_modality, cfg.tau, cfg.force_branch, cfg.ambiguous, per_task=per_task)
    synthetic = inputs_synthetic(inputs)
    diag = {
        "k": cfg.k,
        "n_samples": cfg.n_samples,
        "tau": cfg.tau,
        "prompt_format": cfg.prompt_format,
        "prompt_version": PROMPT_VERSION,
        "sampling": {
            "backend": cfg.backend,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "max_new_tokens": cfg.max_new_tokens,
            "n_samples": cfg.n_samples,
            "seed": cfg.seed,
            "greedy": "argmax decoding, same prompt and prefill",
            "judge_model": cfg.judge_model,
        },
        "synthetic": synthetic,
        "model_ref": io.model,
        "overall": overall,
        "per_task": per_task,
        "per_modality": per_modality,
        "task_groups": {r.task: r.group for r in results},
        "decision": {k: v for k, v in decision.to_dict().items()},
        "perception_limited": limited,
        "bootstrap": {"resamples": cfg.n_boot, "level": 0.95, "method": "percentile, questions resampled jointly"},
    }
    diag = stamp(diag, "diagnosis")
    metrics = kfp_metrics(diag)
    o = overall
    summary = (
        f"{decision.branch}{' (forced)' if decision.forced else ''}: Pass@{cfg.k} {100 * o['pass_at_k'][str(cfg.k)]:.1f}% "
        f"[{100 * o['ci']['pass_at_k'][0]:.1f}-{100 * o['ci']['pass_at_k'][1]:.1f}], Acc@1 {100 * o['acc_at_1']:.1f}%, "
        f"n={o['n']}, tau={cfg.tau}"
    )
    with atomic_dir(io.out) as tmp:
        write_json(tmp / "diagnosis.json", diag)
        write_json(tmp / "metrics.json", metrics)
        write_jsonl(tmp / "samples.jsonl", private_rows(rows) if cfg.private else rows)
        (tmp / "table.md").write_text(markdown_table(diag))
        plot_curves(tmp / "passk_curves.png", {"all": overall, **per_modality}, "Pass@k by modality group", synthetic)
        for g, m in per_modality.items():
            plot_curves(tmp / f"passk_{slug(g)}.png", {g: m, **{t: per_task[t] for t in per_task if diag["task_groups"][t] == g}},
                        f"Pass@k: {g}", synthetic)
        write_lineage(tmp, step="diagnose", artifact="diagnosis", inputs=inputs, params=dataclasses.asdict(cfg),
                      summary=summary)
    if io.metrics_json:
        write_json(io.metrics_json, metrics)
    if io.branch_file:
        atomic_write_text(io.branch_file, decision.branch)
    return diag
