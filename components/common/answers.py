"""Answer extraction: turn a completion into an option letter, or flag a format failure.

    parse_answer("<think>…</think><answer> b </answer>", ["cat", "dog"])  -> ParsedAnswer("B", format_ok=True)
    parse_answer("<answer>dog</answer>", ["cat", "dog"])                   -> ParsedAnswer("B", format_ok=True)
    parse_answer("no tags here", ["cat", "dog"])                          -> ParsedAnswer(None, format_ok=False)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from components.common.records import LETTERS

_ANSWER_RE = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.IGNORECASE | re.DOTALL)
_LETTER_RE = re.compile(r"^\(?([A-Za-z])\)?[.):]?(?:\s+.*)?$", re.DOTALL)


@dataclass(frozen=True)
class ParsedAnswer:
    letter: str | None  # None when no option could be read
    format_ok: bool  # the completion followed the <answer>…</answer> format


def _normalise(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip().strip(".").lower()


def _letter_from(body: str, options: list[str]) -> str | None:
    valid = LETTERS[: len(options)]
    m = _LETTER_RE.match(body.strip())
    if m and m.group(1).upper() in valid:
        return m.group(1).upper()
    norm = _normalise(body)
    matches = [LETTERS[i] for i, opt in enumerate(options) if _normalise(opt) == norm]
    return matches[0] if len(matches) == 1 else None


def parse_answer(completion: str, options: list[str]) -> ParsedAnswer:
    """Read the option letter from the last <answer> block: a letter (any case, optional '(B)', 'B.') or
    the text of exactly one option. Without an <answer> block the completion is a format failure."""
    blocks = _ANSWER_RE.findall(completion or "")
    if not blocks:
        return ParsedAnswer(None, False)
    return ParsedAnswer(_letter_from(blocks[-1], options), True)
