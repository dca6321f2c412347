"""SFT targets that keep GRPO-CARE meaningful: answer-only for the direct format, teacher-written rationales for the
think and scaffold formats.

A fixed template rationale ("The image is consistent with X.") teaches the model to name the answer with certainty;
after such a bridge the EMA reference's confidence in the answer is ~1 for every completion, and GRPO-CARE's
consistency bonus degenerates to bonus x accuracy. So, with the think (or scaffold) format the bridge trains on
reasoning a teacher VLM (by default the pipeline's labeller model) writes for each question, *given* the correct
answer, in the prompt format GRPO will use; with the direct format the target is `<answer>X</answer>` alone.

    teacher_messages(rec, "think")                    # the question as the student sees it + the answer to justify
    extract_rationale(text, rec)                      # the reasoning, or None (empty, or it argues for another option)
    sft_target(rec, "think", rationale)               # "<think>{rationale}</think><answer>B</answer>"
    table = write_rationales(records, image_dir, teacher_ref, cache_dir, fmt="think", max_new_tokens=512)

Rationales are cached (components.common.jsonl_cache) by (image sha256, question, options, answer, teacher, prompt
version, format, token limit): a rerun, or a resumed task, only asks the teacher for what is missing. Under several
processes each writes its share of the missing rationales; every process then reads them all.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.common.records import MCQRecord

PROMPT_VERSION = "rationale-v1"
RATIONALES = ("teacher", "template")
_THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_TAG_RE = re.compile(r"</?(think|answer)>")
_ANSWER_BLOCK_RE = re.compile(r"<answer>.*?</answer>", re.DOTALL)

TEACHER_INSTRUCTION = (
    "The correct answer is {letter}. {text}. Write the reasoning that leads from the image and the question to this "
    "answer{scaffold} inside <think> </think> tags, as if you were solving the question yourself (never say that "
    "the answer was given to you), then give only the letter inside <answer> </answer> tags."
)


def teacher_messages(rec: MCQRecord, fmt: str) -> list[dict]:
    """The student's prompt for `rec` in format `fmt`, followed by the answer the teacher must justify."""
    from components.common.prompts import question_text

    scaffold = ", following the numbered steps above," if fmt == "scaffold" else ""
    hint = TEACHER_INSTRUCTION.format(letter=rec.answer, text=rec.answer_text, scaffold=scaffold)
    content: list[dict] = [{"type": "image"}] if rec.image is not None else []
    content.append({"type": "text", "text": f"{question_text(rec, fmt)}\n\n{hint}"})
    return [{"role": "user", "content": content}]


def extract_rationale(text: str, rec: MCQRecord) -> str | None:
    """The reasoning in a teacher's completion: the inside of its first <think> block, else the text without any
    <answer> block; None when nothing is left or when the teacher's own answer names another option."""
    from components.common.answers import parse_answer

    parsed = parse_answer(text, rec.options)
    if parsed.letter is not None and parsed.letter != rec.answer:
        return None
    m = _THINK_RE.search(text)
    body = m.group(1) if m else _ANSWER_BLOCK_RE.sub(" ", text)
    body = _TAG_RE.sub(" ", body)
    body = re.sub(r"[ \t]+", " ", body).strip()
    return body or None


def sft_target(rec: MCQRecord, fmt: str, rationale: str | None = None) -> str:
    """The supervised completion: `<answer>X</answer>` for direct; `<think>{rationale}</think><answer>X</answer>`
    otherwise (a rationale is required for think and scaffold)."""
    from components.common.prompts import check_prompt_format

    check_prompt_format(fmt)
    answer = f"<answer>{rec.answer}</answer>"
    if fmt == "direct":
        return answer
    if not rationale:
        raise ValueError(f"record {rec.id!r}: the {fmt!r} format needs a rationale for its target")
    return f"<think>{rationale}</think>{answer}"


def template_rationale(rec: MCQRecord) -> str:
    """The fixed sentence MedBridge used before teacher rationales (kept for warming up a random demo model only)."""
    return f"The image is consistent with {rec.answer_text}."


def rationale_key(image_sha256: str, rec: MCQRecord, teacher: str, fmt: str, max_new_tokens: int) -> str:
    doc = [image_sha256, rec.question, rec.options, rec.answer, teacher, PROMPT_VERSION, fmt, max_new_tokens]
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@dataclass
class RationaleTable:
    rationales: dict[str, str | None]  # record id -> rationale (None: rejected)
    stats: dict[str, Any] = field(default_factory=dict)


def write_rationales(
    records: list[MCQRecord],
    image_dir: str | Path,
    teacher: str,
    cache_dir: str | Path,
    *,
    fmt: str,
    max_new_tokens: int = 512,
    batch_size: int = 8,
    seed: int = 0,
) -> RationaleTable:
    """A rationale for every record: from the cache, else written now by `teacher` (one sample at temperature 0.7,
    top-p 0.9, seeded: greedy decoding loops on weak teachers), this process taking its share of the missing ones.
    Collective when several processes run: call it on all of them."""
    from components.common.io import sha256_file
    from components.common.jsonl_cache import JsonlCache
    from components.common.training import barrier, process_rank, world_size

    image_dir = Path(image_dir)
    cache = JsonlCache(cache_dir)
    sha: dict[str, str] = {}
    keys: dict[str, str] = {}
    for rec in records:
        if rec.image is not None and rec.image not in sha:
            sha[rec.image] = sha256_file(image_dir / rec.image)
        keys[rec.id] = rationale_key(sha.get(rec.image or "", "no-image"), rec, teacher, fmt, max_new_tokens)
    missing = [r for r in records if cache.get(keys[r.id]) is None]
    mine = missing[process_rank() :: world_size()]
    if mine:
        _generate(mine, keys, image_dir, teacher, cache, fmt=fmt, max_new_tokens=max_new_tokens,
                  batch_size=batch_size, seed=seed)
    barrier()
    cache.reload()
    table = {r.id: cache.get(keys[r.id])["rationale"] for r in records}
    rejected = sum(v is None for v in table.values())
    return RationaleTable(table, {
        "source": "teacher", "teacher": teacher, "prompt_version": PROMPT_VERSION, "records": len(records),
        "generated": len(missing), "cached": len(records) - len(missing), "rejected": rejected,
    })


def _generate(records, keys, image_dir, teacher, cache, *, fmt, max_new_tokens, batch_size, seed) -> None:
    import gc

    from components.common.modeling import load_model_and_processor
    from components.common.records import open_image
    from components.common.sampling import Prompt, SamplingConfig, TransformersBackend
    from components.common.training import zero3_init_suspended

    with zero3_init_suspended():  # the teacher is whole on every process, whatever the student's training uses
        model, processor = load_model_and_processor(teacher, device="auto")
    backend = TransformersBackend(
        teacher, SamplingConfig(max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, device=str(model.device)),
        model=model, processor=processor,
    )
    try:
        for start in range(0, len(records), batch_size):
            batch = records[start : start + batch_size]
            texts = [outs[0] for outs in backend.sample(
                [Prompt(teacher_messages(r, fmt), open_image(image_dir, r)) for r in batch], n=1
            )]
            now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            cache.append([
                {"key": keys[r.id], "record_id": r.id, "teacher": teacher, "prompt_version": PROMPT_VERSION,
                 "format": fmt, "rationale": extract_rationale(t, r), "raw": t, "created_at": now}
                for r, t in zip(batch, texts, strict=True)
            ])  # on disk before the next batch starts
    finally:
        del backend, model
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
