"""The curate step, top to bottom: raw MedMNIST + PMC-VQA -> validated datasets and a curation report.

    io = CurateIO(medmnist_root=..., pmc_vqa_root=..., out_medmnist_data=..., out_diag_set=..., out_eval_set=...,
                  out_sft_set=..., out_rl_set=..., out_curation_report=...)
    summary = run_curate(CurateConfig(), io)

1. Benchmarks (with --benchmarks-root): every evaluation question is read in its public layout (the same loader
   the evaluate step uses), to keep it out of training.
2. PMC-VQA: the CSV is read, bad rows quarantined, each question's modality labelled by the VLM (cached). A held-out
   diagnosis slice of `target_diag_per_modality` questions per modality is written to rl_diag_set (the
   distribution RL trains on, where the branch is decided and the GRPO guard watches).
3. MedMNIST: every split of every task is read through medmnist's classes and checked; the validated npz files
   are copied to `medmnist_data` (with `tasks.json`). diag_set = class-balanced val split, eval_set = class-
   balanced test split, sft_set = class-balanced train split, all as MCQ dataset dirs.
4. Contamination (`contamination.py`): every question of sft_set and of the PMC-VQA pool whose image or question text
   appears in an evaluation set (the benchmarks, eval_set, diag_set, rl_diag_set) is removed from training and
   counted; then a modality-balanced subset of rl_size questions of the clean pool is written to rl_set.
5. Every dataset passes a great-expectations suite before its directory appears (each output is written with
   atomic_dir); a failing suite stops the step with an error naming the dataset, expectations and rows, after
   the curation report (validation results, quarantine, cards, counts, contamination) has been written.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from collections import Counter
from typing import Any

from components.common.io import atomic_dir, sha256_file, write_json, write_jsonl
from components.common.lineage import is_synthetic, write_lineage
from components.common.markdown import md_table
from components.common.medmnist import npz_path, resolve_size
from components.common.medmnist_tasks import get_task
from components.common.records import MCQRecord, image_key, load_open_records, save_records
from components.common.schema import stamp
from components.common.storage import cache_root, local_dir
from components.curate.balance import balance_by_modality, counts_chart, counts_table_md, hold_out_by_modality
from components.curate.card import dataset_card, quarantine_reasons
from components.curate.config import CurateConfig, CurateIO
from components.curate.contamination import Item, contaminated, counts as contamination_counts, eval_keys, question_key
from components.curate.medmnist_mcq import build_medmnist_mcq

STEP = "curate"


def items_of(records, dataset_dir: str | Path) -> list[Item]:
    """Contamination keys of dataset records: image pixel hash and normalised question text."""
    return [Item(r.id, image_key(Path(dataset_dir) / r.image) if r.image else None, question_key(r.question))
            for r in records]


def benchmark_items(root: str, names: str, mirror: Path) -> dict[str, list[Item]]:
    """{"benchmark <name>": items} of every question (multiple choice and open-ended) of the benchmarks, read by the
    loader the evaluate step uses (an s3:// root is mirrored under `mirror`)."""
    import tempfile

    from components.common.benchmark import BENCHMARKS, parse_benchmarks, prepare_benchmark

    out: dict[str, list[Item]] = {}
    if not root:
        return out
    for name in parse_benchmarks(names):
        with tempfile.TemporaryDirectory(prefix=f"medbridge-{name}-") as tmp:
            records, _ = prepare_benchmark(BENCHMARKS[name], root, tmp, cache_dir=mirror / "benchmarks")
            out[f"benchmark {name}"] = items_of([*records, *load_open_records(tmp)], tmp)
    return out


def run_curate(cfg: CurateConfig, io: CurateIO) -> dict[str, Any]:
    from components.curate.validate import (
        DatasetValidationError,
        DatasetValidator,
        ImageBounds,
    )

    if cfg.label_liger_kernels:  # refused before anything is read or loaded where the kernels cannot run
        from components.curate.labeller import require_labeller_liger

        require_labeller_liger(cfg.device)
    params = dataclasses.asdict(cfg)
    mirror = Path(cfg.cache_dir) if cfg.cache_dir else cache_root() / "data"
    mm_root = local_dir(io.medmnist_root, mirror, what="medmnist_root")
    pmc_root = local_dir(io.pmc_vqa_root, mirror, what="pmc_vqa_root")
    # Lineage reads the roots where they were read (an s3:// source through its local mirror).
    mm_inputs = {"medmnist_root": str(mm_root)}
    rl_inputs = {"pmc_vqa_root": str(pmc_root), "labeller_model": io.labeller_model}
    syn_mm, syn_pmc = is_synthetic(mm_root), is_synthetic(pmc_root)
    flags = cfg.flag_list
    bounds = ImageBounds(cfg.image_min_side, cfg.image_max_side)
    validator = DatasetValidator()
    validation: dict[str, dict[str, Any]] = {}
    errors: list[DatasetValidationError] = []
    cards: dict[str, str] = {}
    counts: dict[str, Any] = {}
    contamination: dict[str, Any] = {}

    # -- 1. Benchmarks: the questions every training set must not hold.
    evaluation: dict[str, list[Item]] = benchmark_items(io.benchmarks_root, cfg.benchmarks, mirror)

    # -- 2. PMC-VQA: load + quarantine, label modality (cached), hold out the diagnosis slice.
    from components.curate.labeller import (
        LabelCache,
        ModalityLabeller,
        label_modalities,
    )
    from components.curate.pmcvqa import load_pmc_vqa

    loaded = load_pmc_vqa(pmc_root, cfg.pmc_vqa_csv or None, cfg.pmc_vqa_image_dir or None)
    quarantine = [q.to_dict() for q in loaded.quarantine]
    cache_path = Path(cfg.label_cache).expanduser() if cfg.label_cache else cache_root() / "curate" / "modality_labels.jsonl"
    label_cache = LabelCache(cache_path)  # with the shard files of `python -m components.curate.label`, merged
    labeller = ModalityLabeller(io.labeller_model, device=cfg.device, compile=cfg.label_compile,
                                liger_kernels=cfg.label_liger_kernels)
    labels = label_modalities(loaded.records, pmc_root, labeller, label_cache, batch_size=cfg.label_batch_size,
                              fast=cfg.label_fast, token_budget=cfg.label_token_budget, workers=cfg.label_workers)
    labelled = []
    for r in loaded.records:
        e = labels[r.id]
        labelled.append(dataclasses.replace(
            r, modality=e.label,
            meta={**r.meta, "modality_labeller": e.model, "modality_prompt_version": e.prompt_version},
        ))
    labeller_info = {"model": io.labeller_model, "prompt_version": labeller.prompt_version,
                     "method": "constrained choice: highest log-likelihood of the 8 category answers",
                     "label_cache": str(cache_path), "label_conflicts": len(label_cache.conflicts)}
    pool_items = items_of(labelled, pmc_root)
    # the slice is drawn from questions no benchmark holds, so that the decision and the benchmarks stay independent
    in_benchmarks = contaminated(pool_items, eval_keys(evaluation, pool_items))
    held_out = hold_out_by_modality([r for r in labelled if r.id not in in_benchmarks], cfg.target_diag_per_modality,
                                    cfg.include_none, cfg.seed)
    held_ids = {r.id for r in held_out}
    evaluation["rl_diag_set"] = [it for it in pool_items if it.id in held_ids]
    try:
        with atomic_dir(io.out("rl_diag_set")) as tmp:
            for r in held_out:
                (tmp / r.image).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(pmc_root / r.image, tmp / r.image)
            save_records(tmp, held_out)
            validation["rl_diag_set"] = validator.validate("rl_diag_set", tmp, held_out, option_counts=(4, 4), bounds=bounds)
            card = dataset_card(
                "rl_diag_set", held_out,
                description=f"Held-out diagnosis slice of the labelled PMC-VQA pool ({loaded.csv_path.name}): up to "
                f"{cfg.target_diag_per_modality} questions per modality ('none' {'included' if cfg.include_none else 'excluded'}), "
                "drawn before rl_set from questions no benchmark holds; no rl_set question shares its image or its question "
                "text. The branch is decided "
                "on it (the distribution RL trains on) and the GRPO support guard watches it.",
                sources={"pmc_vqa_root": io.pmc_vqa_root, "labeller_model": io.labeller_model},
                source_hashes={loaded.csv_path.name: sha256_file(loaded.csv_path)},
                records_sha256=sha256_file(tmp / "records.jsonl"), synthetic=syn_pmc or is_synthetic(io.labeller_model),
                params=params, validation=validation["rl_diag_set"], labeller=labeller_info,
            )
            (tmp / "card.md").write_text(card)
            cards["rl_diag_set"] = card
            counts["rl_diag_set"] = len(held_out)
            write_lineage(tmp, step=STEP, artifact="rl_diag_set", inputs=rl_inputs, params=params,
                          summary=f"{len(held_out)} held-out PMC-VQA diagnosis questions "
                          f"({', '.join(f'{m} {n}' for m, n in sorted(Counter(r.modality for r in held_out).items()))})")
    except DatasetValidationError as e:
        validation["rl_diag_set"], counts["rl_diag_set"] = e.result, 0
        errors.append(e)

    # -- 3. MedMNIST: MCQ sets (reading every split validates the files), then the validated raw copy. The
    # evaluation splits come first: the SFT pool is checked against them (and the benchmarks, the slice).
    sizes = {f: resolve_size(mm_root, f, explicit=cfg.size) for f in flags}
    source_hashes = {npz_path(mm_root, f, sizes[f]).name: None for f in flags}
    splits = {"diag_set": ("val", cfg.diag_per_class, io.out("diag_set"), "diagnosis set: class-balanced subsets of the official val splits"),
              "eval_set": ("test", cfg.eval_per_class, io.out("eval_set"), "evaluation set: class-balanced subsets of the official test splits"),
              "sft_set": ("train", cfg.sft_per_class, io.out("sft_set"), "proximal SFT pool: class-balanced subsets of the official train splits")}
    split_sizes: dict[str, dict[str, int]] = {f: {} for f in flags}
    for name, (split, per_class, dest, what) in splits.items():
        try:
            with atomic_dir(dest) as tmp:
                records: list[MCQRecord] = []
                for f in flags:
                    recs = build_medmnist_mcq(mm_root, f, split, tmp, per_class=per_class, size=sizes[f], seed=cfg.seed)
                    records += recs
                    split_sizes[f][split] = len(recs)
                if name == "sft_set":  # keep every evaluation question out of the SFT pool
                    train_items = items_of(records, tmp)
                    hits = contaminated(train_items, eval_keys(evaluation, train_items))
                    contamination["sft_set"] = contamination_counts(hits, len(records))
                    for r in records:
                        if r.id in hits:
                            (tmp / r.image).unlink()
                    records = [r for r in records if r.id not in hits]
                else:
                    evaluation[name] = items_of(records, tmp)
                save_records(tmp, records)
                validation[name] = validator.validate(name, tmp, records, option_counts=(2, 26), bounds=bounds)
                for fn in source_hashes:
                    if source_hashes[fn] is None:
                        source_hashes[fn] = sha256_file(mm_root / fn)
                card = dataset_card(
                    name, records,
                    description=f"MedMNIST-v2 {what} ({', '.join(flags)}), {per_class} questions per class (fewer where a "
                    "class has fewer images); options are the task's class names, shuffled per question. ChestMNIST "
                    "(multi-label) asks which one finding is present, with one positive and only negative findings "
                    "among the options; images without findings are not used.",
                    sources={"medmnist_root": io.medmnist_root}, source_hashes=source_hashes,
                    records_sha256=sha256_file(tmp / "records.jsonl"), synthetic=syn_mm, params=params,
                    validation=validation[name],
                )
                (tmp / "card.md").write_text(card)
                cards[name] = card
                counts[name] = len(records)
                write_lineage(tmp, step=STEP, artifact=name, inputs=mm_inputs, params=params,
                              summary=f"{len(records)} MedMNIST {split} MCQs over {len(flags)} tasks, validated")
        except DatasetValidationError as e:
            validation[name], counts[name] = e.result, 0
            errors.append(e)

    with atomic_dir(io.out("medmnist_data")) as tmp:
        tasks = {}
        for f in flags:
            src = npz_path(mm_root, f, sizes[f])
            shutil.copy2(src, tmp / src.name)
            t = get_task(f)
            tasks[f] = {"file": src.name, "size": sizes[f], "sha256": source_hashes[src.name] or sha256_file(src),
                        "name": t.name, "modality": t.modality, "group": t.group, "mcq_questions": split_sizes[f]}
        write_json(tmp / "tasks.json", stamp({"tasks": tasks}, "medmnist_tasks"))
        write_lineage(tmp, step=STEP, artifact="medmnist_data", inputs=mm_inputs, params=params,
                      summary=f"validated MedMNIST-v2 npz files for {len(flags)} tasks ({', '.join(f'{f}@{sizes[f]}' for f in flags)})")

    # -- 4. The RL set: the labelled pool without the slice and without any evaluation question, balanced.
    keys = eval_keys(evaluation, pool_items)
    hits = contaminated(pool_items, keys)
    pool_hits = {i: h for i, h in hits.items() if i not in held_ids}
    contamination["rl_set"] = {**contamination_counts(pool_hits, len(labelled) - len(held_ids)),
                               "held_out_slice": len(held_ids)}
    contamination["templates_not_used_as_keys"] = len(keys.templates)
    contamination["evaluation_sets"] = {name: len(items) for name, items in evaluation.items()}
    clean = [r for r in labelled if r.id not in hits and r.id not in held_ids]
    bal = balance_by_modality(clean, target=cfg.rl_size, include_none=cfg.include_none, seed=cfg.seed)
    plan = bal.plan
    table = counts_table_md(plan)
    shares = {m: p.selected / plan.total_selected for m, p in plan.modalities.items()} if plan.total_selected else {}
    try:
        with atomic_dir(io.out("rl_set")) as tmp:
            for r in bal.records:
                (tmp / r.image).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(pmc_root / r.image, tmp / r.image)
            save_records(tmp, bal.records)
            validation["rl_set"] = validator.validate(
                "rl_set", tmp, bal.records, option_counts=(4, 4), bounds=bounds,
                modality_shares=shares, share_tolerance=cfg.share_tolerance,
            )
            card = dataset_card(
                "rl_set", bal.records,
                description=f"PMC-VQA ({loaded.csv_path.name}) questions labelled by imaging modality and balanced to "
                f"{cfg.rl_size} questions with equal per-modality quotas ('none' "
                f"{'included' if cfg.include_none else 'excluded'}); the RL (GRPO) training set. The held-out "
                f"diagnosis slice and every question whose image or text is in an evaluation set were removed first "
                f"({contamination['rl_set']['removed']} by contamination).",
                sources={"pmc_vqa_root": io.pmc_vqa_root, "labeller_model": io.labeller_model},
                source_hashes={loaded.csv_path.name: sha256_file(loaded.csv_path)},
                records_sha256=sha256_file(tmp / "records.jsonl"), synthetic=syn_pmc or is_synthetic(io.labeller_model), params=params,
                validation=validation["rl_set"], labeller=labeller_info,
                quarantine=quarantine_reasons(quarantine), balance_md=table,
            )
            (tmp / "card.md").write_text(card)
            cards["rl_set"] = card
            counts["rl_set"] = len(bal.records)
            write_lineage(tmp, step=STEP, artifact="rl_set", inputs=rl_inputs, params=params,
                          summary=f"{len(bal.records)} modality-balanced PMC-VQA MCQs of {len(loaded.records)} usable "
                          f"({len(quarantine)} quarantined, {len(held_ids)} held out for diagnosis, "
                          f"{contamination['rl_set']['removed']} removed as in an evaluation set), validated")
    except DatasetValidationError as e:
        validation["rl_set"], counts["rl_set"] = e.result, 0
        errors.append(e)

    # -- 5. The curation report (written even when a suite failed, so the failure can be inspected).
    summary = {
        "counts": counts,
        "pmc_vqa": {"csv": loaded.csv_path.name, "rows": loaded.n_rows, "usable": len(loaded.records),
                    "quarantined": len(quarantine), "answer_label_column": loaded.has_answer_label},
        "quarantine_by_reason": quarantine_reasons(quarantine),
        "balance": plan.to_dict(),
        "labeller": labeller_info,
        "medmnist_sizes": sizes,
        "contamination": contamination,
        "validation": {k: bool(v.get("success")) for k, v in validation.items()},
        "synthetic": syn_mm or syn_pmc or is_synthetic(io.labeller_model),
    }
    with atomic_dir(io.out("curation_report")) as tmp:
        (tmp / "validation").mkdir()
        for name, res in validation.items():
            write_json(tmp / "validation" / f"{name}.json", stamp(res, "curation"))
        write_jsonl(tmp / "quarantine.jsonl", quarantine)
        write_jsonl(tmp / "labels.jsonl", [{"id": r.id, **dataclasses.asdict(labels[r.id])} for r in loaded.records])
        write_json(tmp / "balance.json", stamp(plan.to_dict(), "curation"))
        write_json(tmp / "contamination.json", stamp(contamination, "curation"))
        (tmp / "rl_counts.md").write_text(table)
        counts_chart(plan, tmp / "rl_counts.png")
        (tmp / "cards").mkdir()
        for name, card in cards.items():
            (tmp / "cards" / f"{name}.md").write_text(card)
        write_json(tmp / "summary.json", stamp(summary, "curation"))
        (tmp / "report.md").write_text(_report_md(summary, table, errors))
        write_lineage(tmp, step=STEP, artifact="curation_report",
                      inputs={**mm_inputs, **rl_inputs}, params=params,
                      summary=f"curation: {counts}; {len(quarantine)} PMC-VQA rows quarantined; "
                      f"validation {'passed' if not errors else 'FAILED for ' + ', '.join(e.dataset for e in errors)}")
    if errors:
        raise errors[0] if len(errors) == 1 else DatasetValidationErrorGroup(errors)
    return summary


class DatasetValidationErrorGroup(ValueError):
    def __init__(self, errors):
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


def _report_md(summary: dict[str, Any], table: str, errors: list) -> str:
    lines = ["# Curation report\n"]
    if summary["synthetic"]:
        lines.append("> **SYNTHETIC DATA.** The sources were generated files in the real formats; nothing here is a medical result.\n")
    lines.append("## Datasets\n")
    lines.append(md_table(["dataset", "questions", "validation"],
                          [[name, n, "passed" if summary["validation"].get(name) else "FAILED"]
                           for name, n in summary["counts"].items()]))
    lines.append("")
    p = summary["pmc_vqa"]
    lines.append(f"## PMC-VQA\n\n`{p['csv']}`: {p['rows']} rows, {p['usable']} usable, {p['quarantined']} quarantined "
                 "(`quarantine.jsonl`: file, line, field, reason).\n")
    if summary["quarantine_by_reason"]:
        lines.append(md_table(["field: reason", "rows"],
                              [list(kv) for kv in sorted(summary["quarantine_by_reason"].items(), key=lambda kv: -kv[1])]))
        lines.append("")
    lab = summary["labeller"]
    lines.append(f"Modality labeller `{lab['model']}`, prompt version `{lab['prompt_version']}` ({lab['method']}).\n")
    lines.append("## Modality balance\n")
    lines.append(table)
    lines.append("![modality counts](rl_counts.png)\n")
    c = summary.get("contamination") or {}
    if c:
        lines.append("## Contamination: evaluation questions kept out of training\n")
        lines.append("A training question is removed when its image (decoded pixels) or its normalised question text "
                     "appears in an evaluation set; question texts asked about several images are templates and match "
                     f"nothing ({c.get('templates_not_used_as_keys', 0)} left out as keys).\n")
        rows = [[name, x["checked"], x["removed"], ", ".join(f"{k} {v}" for k, v in x["by_reason"].items()) or "-",
                 ", ".join(f"{k} {v}" for k, v in x["by_source"].items()) or "-"]
                for name, x in c.items() if isinstance(x, dict) and "checked" in x]
        lines.append(md_table(["training set", "checked", "removed", "by key", "found in"], rows))
        lines.append("")
        lines.append("Evaluation sets checked: " + ", ".join(f"{k} ({v})" for k, v in c.get("evaluation_sets", {}).items()) + "\n")
    if errors:
        lines.append("## Validation failures\n")
        lines += [f"```\n{e}\n```" for e in errors]
    return "\n".join(lines) + "\n"
