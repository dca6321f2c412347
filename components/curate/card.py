"""Dataset cards: one Markdown page per curated dataset, for the people who must answer an audit about it."""

from __future__ import annotations

from collections import Counter
from typing import Any

from components.common.markdown import md_table
from components.common.records import MCQRecord

SYNTHETIC_BANNER = (
    "> **SYNTHETIC DATA.** This dataset was built from generated files in the real formats (demo profile or tests). "
    "Nothing measured on it is a medical result.\n"
)


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    return md_table(list(header), [list(r) for r in rows]) + "\n"


def dataset_card(
    name: str,
    records: list[MCQRecord],
    *,
    description: str,
    sources: dict[str, str],
    source_hashes: dict[str, str],
    records_sha256: str,
    synthetic: bool,
    params: dict[str, Any],
    validation: dict[str, Any] | None = None,
    labeller: dict[str, str] | None = None,
    quarantine: dict[str, int] | None = None,
    balance_md: str | None = None,
) -> str:
    parts = [f"# Dataset card: {name}\n"]
    if synthetic:
        parts.append(SYNTHETIC_BANNER)
    parts.append(f"{description}\n")
    parts.append("## Sources\n")
    parts += [f"- {k}: `{v}`" for k, v in sources.items()]
    parts.append("")
    if source_hashes:
        parts.append(_table(("source file", "sha256"), [(f"`{k}`", f"`{v}`") for k, v in sorted(source_hashes.items())]))
    parts.append("## Counts\n")
    parts.append(f"{len(records)} questions.\n")
    by_task = Counter(r.task for r in records)
    by_mod = Counter(r.modality for r in records)
    parts.append(_table(("task", "questions"), sorted(by_task.items())))
    parts.append(_table(("modality", "questions", "share"), [(m, n, f"{n / max(len(records), 1):.3f}") for m, n in sorted(by_mod.items())]))
    classes = Counter((r.task, r.meta.get("label_name")) for r in records if "label_name" in r.meta)
    if classes:
        parts.append("### Per class (answer)\n")
        parts.append(_table(("task", "class", "questions"), [(t, c, n) for (t, c), n in sorted(classes.items())]))
    parts.append("### Answer letters and option counts\n")
    parts.append(_table(("answer letter", "questions"), sorted(Counter(r.answer for r in records).items())))
    parts.append(_table(("options per question", "questions"), sorted(Counter(len(r.options) for r in records).items())))
    if balance_md:
        parts.append("## Modality balance\n")
        parts.append(balance_md)
    if labeller:
        parts.append("## Modality labelling\n")
        parts += [f"- {k}: `{v}`" for k, v in labeller.items()]
        parts.append("")
    if quarantine is not None:
        parts.append("## Quarantine\n")
        total = sum(quarantine.values())
        parts.append(f"{total} source rows quarantined (not in this dataset; listed with file, line, field and reason in "
                     "the curation report's `quarantine.jsonl`).\n")
        if quarantine:
            parts.append(_table(("reason", "rows"), sorted(quarantine.items(), key=lambda kv: -kv[1])))
    parts.append("## Hashes\n")
    parts.append(f"- records.jsonl sha256: `{records_sha256}`")
    parts.append("- the directory's content hash is in `lineage.json` (`sha256`)\n")
    if validation is not None:
        stats = validation.get("statistics", {})
        parts.append("## Validation (great-expectations)\n")
        parts.append(
            f"{'PASSED' if validation.get('success') else 'FAILED'}: {stats.get('successful_expectations')} of "
            f"{stats.get('evaluated_expectations')} expectations met (full result in the curation report).\n"
        )
    parts.append("## Parameters\n")
    parts += [f"- {k}: `{v}`" for k, v in sorted(params.items())]
    return "\n".join(parts) + "\n"


def quarantine_reasons(entries: list[dict[str, Any]]) -> dict[str, int]:
    """Counts by reason, with free-text details (after the first ':' or '(') folded away."""
    out: Counter[str] = Counter()
    for e in entries:
        reason = e["reason"].split(":")[0].split(" (")[0].strip()
        out[f"{e['field']}: {reason}"] += 1
    return dict(out)
