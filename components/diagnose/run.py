"""The diagnosis, top to bottom: load questions -> sample K + greedy -> read answers -> metrics -> decision -> outputs.

Two question sets: `--target-data`, a held-out slice of the distribution RL trains on (the curate step's
rl_diag_set: balanced PMC-VQA, disjoint from rl_set), decides the branch per its modality groups; `--data` (MedMNIST
val, the curate step's diag_set) is measured too and shown as breadth. Without a target set, `--data` decides.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from components.common.artifacts import PROBE_FILE, read_artifact_json
from components.common.harness import QuestionOutcome, measure, open_backends, open_judge
from components.common.io import atomic_dir, atomic_write_text, write_json, write_jsonl
from components.common.lineage import inputs_synthetic, write_lineage
from components.common.medmnist_tasks import QUESTION_FORMS, TASKS
from components.common.privacy import private_rows
from components.common.prompts import PROMPT_VERSION
from components.common.records import MCQRecord, load_records
from components.common.sampling import SamplingBackend
from components.common.schema import stamp
from components.diagnose.config import DiagnoseConfig, DiagnoseIO
from components.diagnose.decision import decide, gate_after_bridge
from components.diagnose.metrics import summarise, summarise_by
from components.diagnose.report import markdown_table, plot_curves, slug

PROBE_KEYS = ("tasks",)
PROBE_TASK_KEYS = ("perception_limited",)
TARGET_NAME = "rl_diag_set (held-out slice of the distribution RL trains on)"
BREADTH_NAME = "diag_set (MedMNIST val)"


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


def task_groups(results: list[QuestionOutcome]) -> dict[str, str]:
    """{task: its modality group}, or "mixed" for a task whose questions span groups (PMC-VQA's modalities)."""
    seen: dict[str, set[str]] = {}
    for r in results:
        seen.setdefault(r.task, set()).add(r.group)
    return {t: next(iter(g)) if len(g) == 1 else "mixed" for t, g in seen.items()}


def kfp_metrics(diag: dict) -> dict[str, float]:
    """Flat numeric metrics for the kfp Metrics artifact."""
    k = diag["k"]
    o = diag["overall"]
    c = o["corrected"]
    out = {
        "n_questions": float(o["n"]),
        "acc_at_1": o["acc_at_1"],
        f"pass_at_{k}": o["pass_at_k"][str(k)],
        f"pass_at_{k}_ci_low": o["ci"]["pass_at_k"][0],
        f"pass_at_{k}_ci_high": o["ci"]["pass_at_k"][1],
        f"chance_pass_at_{k}": o["chance"]["pass_at_k"][str(k)],
        "corrected_acc_at_1": c["acc_at_1"],
        "corrected_pass_at_k": c["pass_at_k"],
        "corrected_pass_at_k_ci_low": c["ci"]["pass_at_k"][0],
        "corrected_pass_at_k_ci_high": c["ci"]["pass_at_k"][1],
        "gap": o["gap"],
        "format_failure_rate": o["format_failure_rate"],
        "truncation_rate": o["truncation_rate"],
        "mean_distinct_answers": o["mean_distinct_answers"],
        "tau": diag["tau"],
        "decided_on_target": 1.0 if diag["decided_on"]["set"] == "target" else 0.0,
        "branch_is_bridge": 1.0 if diag["decision"]["branch"] == "bridge" else 0.0,
        "branch_forced": 1.0 if diag["decision"]["forced"] else 0.0,
    }
    if "gate" in diag:
        out["gate_proceed"] = 1.0 if diag["gate"]["outcome"] == "proceed" else 0.0
        out["gate_forced"] = 1.0 if diag["gate"]["forced"] else 0.0
    for g, m in diag["per_modality"].items():
        out[f"{slug(g)}_acc_at_1"] = m["acc_at_1"]
        out[f"{slug(g)}_pass_at_{k}"] = m["pass_at_k"][str(k)]
        out[f"{slug(g)}_corrected_pass_at_k"] = m["corrected"]["pass_at_k"]
    return out


def run_diagnosis(
    cfg: DiagnoseConfig,
    io: DiagnoseIO,
    *,
    backend: SamplingBackend | None = None,
    judge: SamplingBackend | None = None,
) -> dict:
    """Diagnose `io.model` on `io.target_data` (deciding) and `io.data` (breadth); write the diagnosis directory at
    `io.out` (and the metrics / branch files when asked); return diagnosis.json's dict."""
    breadth_records = load_questions(io.data, cfg.max_questions)
    target_records = load_questions(io.target_data, cfg.max_questions) if io.target_data else []
    limited = read_probe(io.probe)
    inputs = {"model": io.model, "diag_set": io.data}
    if io.target_data:
        inputs["rl_diag_set"] = io.target_data
    if io.probe:
        inputs["probe_report"] = io.probe
    if backend is None:
        backend, opened_judge = open_backends(cfg, io.model)
        judge = judge or opened_judge
    elif judge is None and cfg.judge_model:
        judge = open_judge(cfg)

    results, rows = [], []
    sets = [("target", io.target_data, target_records), ("breadth", io.data, breadth_records)]
    task_sets: dict[str, str] = {}
    by_set: dict[str, list[QuestionOutcome]] = {}
    for name, folder, recs in sets:
        if not recs:
            continue
        outcomes, set_rows = measure(recs, folder, backend, cfg, judge=judge, group_of=group_of)
        by_set[name] = outcomes
        results += outcomes
        rows += [{"set": name, **r} for r in set_rows]
        task_sets.update({o.task: name for o in outcomes})

    kw = dict(ceiling=cfg.chance_ceiling, n_boot=cfg.n_boot, seed=cfg.seed)
    deciding = "target" if "target" in by_set else "breadth"
    decided_name = TARGET_NAME if deciding == "target" else BREADTH_NAME
    overall = summarise(by_set[deciding], cfg.k, **kw)
    per_modality = summarise_by(by_set[deciding], "group", cfg.k, **kw)
    per_task = summarise_by(results, "task", cfg.k, **kw)
    decision = decide(overall, per_modality, cfg.tau, cfg.force_branch, cfg.ambiguous, per_task=per_task,
                      decided_on=decided_name)
    synthetic = inputs_synthetic(inputs)
    all_options = summarise(results, cfg.k, **kw)["corrected"]
    diag = {
        "stage": "after-bridge" if cfg.after_bridge else "initial",
        "k": cfg.k,
        "n_samples": cfg.n_samples,
        "tau": cfg.tau,
        "prompt_format": cfg.prompt_format,
        "prompt_version": PROMPT_VERSION,
        "harness": cfg.record(),
        "sampling": {
            "backend": cfg.backend,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "max_new_tokens": cfg.max_new_tokens,
            "n_samples": cfg.n_samples,
            "seed": cfg.seed,
            "min_pixels": cfg.min_pixels,
            "max_pixels": cfg.max_pixels,
            "greedy": "argmax decoding, same prompt and prefill",
            "judge_model": cfg.judge_model,
            "judge_mode": cfg.judge_mode,
        },
        "chance_correction": {
            "ceiling": cfg.chance_ceiling,
            "method": "per question from its own option count C: corrected = (pass@k_q - chance) / (1 - chance) "
            "with chance = 1 - (1 - 1/C)^k_q and k_q the largest k <= K whose chance stays <= the ceiling; "
            "Acc@1 corrected with chance 1/C; means over questions, percentile-bootstrap intervals",
            "k_used": all_options["k_used"],
            "chance_at_k_used": all_options["chance_at_k_used"],
        },
        "synthetic": synthetic,
        "model_ref": io.model,
        "decided_on": {"set": deciding, "name": decided_name, "data": io.target_data if deciding == "target" else io.data,
                       "n": overall["n"]},
        "overall": overall,
        "per_task": per_task,
        "per_modality": per_modality,
        "task_groups": task_groups(results),
        "task_sets": task_sets,
        "decision": decision.to_dict(),
        "perception_limited": limited,
        "question_forms": {t: QUESTION_FORMS[t] for t in per_task if t in QUESTION_FORMS},
        "bootstrap": {"resamples": cfg.n_boot, "level": 0.95, "method": "percentile, questions resampled jointly"},
    }
    if deciding == "target" and "breadth" in by_set:
        diag["breadth"] = {
            "name": BREADTH_NAME,
            "overall": summarise(by_set["breadth"], cfg.k, **kw),
            "per_modality": summarise_by(by_set["breadth"], "group", cfg.k, **kw),
        }
    out_value = decision.branch
    if cfg.after_bridge:
        gate = gate_after_bridge(overall, cfg.tau, cfg.force_rl, cfg.ambiguous)
        diag["gate"] = gate.to_dict()
        out_value = gate.outcome
    diag = stamp(diag, "diagnosis")
    metrics = kfp_metrics(diag)
    c = overall["corrected"]
    lead = "re-diagnosis of the bridged model" if cfg.after_bridge else f"{decision.branch}{' (forced)' if decision.forced else ''}"
    summary = (
        f"{lead} on {deciding}: corrected Pass@K "
        f"{100 * c['pass_at_k']:.1f}% [{100 * c['ci']['pass_at_k'][0]:.1f}, {100 * c['ci']['pass_at_k'][1]:.1f}], "
        f"raw Pass@{cfg.k} {100 * overall['pass_at_k'][str(cfg.k)]:.1f}%, Acc@1 {100 * overall['acc_at_1']:.1f}%, "
        f"n={overall['n']}, tau={cfg.tau}"
        + (f"; gate: {diag['gate']['outcome']}{' (forced)' if diag['gate']['forced'] else ''}"
           if cfg.after_bridge else "")
    )
    with atomic_dir(io.out) as tmp:
        write_json(tmp / "diagnosis.json", diag)
        write_json(tmp / "metrics.json", metrics)
        write_jsonl(tmp / "samples.jsonl", private_rows(rows) if cfg.private else rows)
        (tmp / "table.md").write_text(markdown_table(diag))
        curves = {"decision set": overall, **per_modality}
        if "breadth" in diag:
            curves["breadth (MedMNIST)"] = diag["breadth"]["overall"]
        plot_curves(tmp / "passk_curves.png", curves, "Pass@k by modality group (dashed: chance)", synthetic)
        groups = dict(per_modality)
        if "breadth" in diag:
            groups.update({g: m for g, m in diag["breadth"]["per_modality"].items() if g not in groups})
        for g, m in groups.items():
            members = {t: per_task[t] for t in per_task if diag["task_groups"][t] == g and t not in groups}
            plot_curves(tmp / f"passk_{slug(g)}.png", {g: m, **members}, f"Pass@k: {g} (dashed: chance)", synthetic)
        write_lineage(tmp, step="rediagnose" if cfg.after_bridge else "diagnose", artifact="diagnosis",
                      inputs=inputs, params=dataclasses.asdict(cfg), summary=summary)
    if io.metrics_json:
        write_json(io.metrics_json, metrics)
    if io.branch_file:
        atomic_write_text(io.branch_file, out_value)
    return diag

