"""The privacy flag: what sample dumps and reports keep when a run handles private data (a hospital's own images and
questions).

    rows = private_rows(rows)          # samples.jsonl rows: ids, tasks, letters, correctness, format flags; no texts
    ctx = private_report(ctx)          # a run report's context without embedded pictures from the inputs

On (`--private`, or MEDBRIDGE_PRIVATE=1 in the step's environment, which the re-diagnosis pipeline sets with
`medbridge watch --private`), a step keeps no image and no question, option, answer or completion text outside the
datasets themselves: sample dumps keep per-question outcomes (enough to recompute every metric), reports keep
numbers and MedBridge's own plots, and the evaluate step drops its copies of the benchmark questions. The datasets
(curate's outputs) are the data; they stay where the hospital keeps them.
"""

from __future__ import annotations

import os
from typing import Any

PRIVATE_ENV = "MEDBRIDGE_PRIVATE"
# Keys whose values are free text or pictures taken from, or generated about, the data.
TEXT_KEYS = frozenset({
    "completion", "completions", "question", "options", "option_texts", "answer_text", "text", "prompt", "messages",
    "rationale", "image", "images", "image_path", "caption", "context", "raw",
})
# Keys that hold completions as bare strings in some dumps (evaluate: "greedy": "...", "samples": ["...", ...]).
_TEXT_WHEN_STRINGS = frozenset({"greedy", "samples"})


def env_private() -> bool:
    """The flag's default: MEDBRIDGE_PRIVATE set to 1 / true / yes in the environment."""
    return os.environ.get(PRIVATE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _is_texts(v: Any) -> bool:
    return isinstance(v, str) or (isinstance(v, list) and bool(v) and all(isinstance(x, str) for x in v))


def private_row(value: Any) -> Any:
    """A copy of one dump row (any JSON-like value) without texts and pictures: TEXT_KEYS are dropped at any depth,
    `greedy` / `samples` when they hold strings, and the reference `answer` of an open-ended question (a text, where
    a multiple-choice row's answer is an option letter); letters, ids, correctness and counts stay."""
    if isinstance(value, dict):
        is_open = value.get("open") is True
        return {
            k: private_row(v)
            for k, v in value.items()
            if k not in TEXT_KEYS and not (k in _TEXT_WHEN_STRINGS and _is_texts(v)) and not (is_open and k == "answer")
        }
    if isinstance(value, list):
        return [private_row(v) for v in value]
    return value


def private_rows(rows: list[dict]) -> list[dict]:
    return [private_row(r) for r in rows]


def private_report(ctx: dict[str, Any]) -> dict[str, Any]:
    """A run report's context without pictures that came with the inputs (the curation report's images); MedBridge's
    own Pass@k curves stay, and every table already holds numbers only."""
    out = dict(ctx)
    if isinstance(out.get("curation"), dict):
        out["curation"] = {**out["curation"], "images": []}
    out["private"] = True
    return out
