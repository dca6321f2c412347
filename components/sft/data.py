"""Proximal data for the bridge step: the sft_set records of the tasks / modalities the diagnosis found weak.

    sel = select_proximal(records, diagnosis)          # Selection(records, reason, fell_back)
    capped = cap_balanced(sel.records, 2000, seed=0)   # class-balanced over (task, answer), seeded
    rows = build_sft_rows(capped, "sft_set/", "think", rationales)   # rationales: record id -> teacher text
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.common.records import MCQRecord, balanced_take, open_image


@dataclass
class Selection:
    records: list[MCQRecord]
    reason: str  # one line for the summary / report
    fell_back: bool  # True when nothing was weak (or nothing matched) and every task was used


def _group_of(rec: MCQRecord) -> str | None:
    return rec.meta.get("group") if isinstance(rec.meta, dict) else None


def select_proximal(records: list[MCQRecord], diagnosis: dict[str, Any]) -> Selection:
    """Records whose task is in decision.weak_tasks, or whose meta.group or modality is in decision.weak_modalities.

    With no weak task or modality, or none matching the pool, every record is used and the reason says so.
    """
    decision = diagnosis.get("decision")
    if not isinstance(decision, dict):
        raise ValueError("diagnosis.json: field 'decision' is missing or not an object; re-run the diagnose step")
    weak_tasks = set(decision.get("weak_tasks") or [])
    weak_mods = set(decision.get("weak_modalities") or [])
    if not weak_tasks and not weak_mods:
        return Selection(list(records), f"no weak task or modality in the diagnosis: all {len(records)} records used", True)
    chosen = [r for r in records if r.task in weak_tasks or _group_of(r) in weak_mods or r.modality in weak_mods]
    named = ", ".join(sorted(weak_tasks | weak_mods))
    if not chosen:
        return Selection(
            list(records), f"weak {named} not present in sft_set: all {len(records)} records used", True
        )
    return Selection(chosen, f"{len(chosen)} proximal records for weak {named}", False)


def cap_balanced(records: list[MCQRecord], max_examples: int, seed: int) -> list[MCQRecord]:
    """At most `max_examples` records, balanced over (task, answer) classes (`balanced_take`), in a seeded order."""
    out = list(records) if max_examples == 0 else balanced_take(records, max_examples, lambda r: (r.task, r.answer), seed)
    random.Random(seed).shuffle(out)
    return out


def build_sft_rows(
    records: list[MCQRecord], dataset_dir: str | Path, fmt: str, rationales: dict[str, str | None] | None = None
) -> list[dict[str, Any]]:
    """TRL prompt-completion rows: only the completion (the target) is trained on.

    Targets follow the prompt format (components.sft.rationales.sft_target): `<answer>X</answer>` for direct, the
    record's rationale in `<think>` for think / scaffold; a record without one (the teacher's was rejected) is left
    out."""
    from components.common.prompts import build_messages
    from components.sft.rationales import sft_target

    rows = []
    for r in records:
        rationale = (rationales or {}).get(r.id)
        if fmt != "direct" and not rationale:
            continue
        row: dict[str, Any] = {
            "prompt": build_messages(r, fmt),
            "completion": [{"role": "assistant", "content": sft_target(r, fmt, rationale)}],
        }
        row["images"] = [open_image(dataset_dir, r)] if r.image is not None else []
        rows.append(row)
    return rows


def example_lengths(rows: list[dict[str, Any]], processor) -> list[int]:
    """Tokens of each SFT row as TRL's vision collator builds it: the chat template of prompt + completion, each
    image's one placeholder expanded to its visual tokens (Qwen2.5-VL's resize: sides rounded to patch x merge,
    area within the processor's pixel bounds). No image is processed: the lengths of 20k rows take seconds."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    ip = processor.image_processor
    factor = ip.patch_size * ip.merge_size
    min_px, max_px = ip.size["shortest_edge"], ip.size["longest_edge"]
    out = []
    for row in rows:
        text = processor.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
        n = len(processor.tokenizer(text)["input_ids"])
        for img in row.get("images") or []:
            h, w = smart_resize(img.height, img.width, factor=factor, min_pixels=min_px, max_pixels=max_px)
            n += (h // factor) * (w // factor) - 1
        out.append(n)
    return out
