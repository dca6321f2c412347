"""Answer extraction: turn a completion into an option letter, or flag a format failure.

    parse_answer("<think>…</think><answer> b </answer>", ["cat", "dog"])  -> ParsedAnswer("B", format_ok=True)
    parse_answer("<answer>dog</answer>", ["cat", "dog"])                   -> ParsedAnswer("B", format_ok=True)
    parse_answer("<answer>(B) dog</answer>", ["cat", "dog"])               -> ParsedAnswer("B", format_ok=True)
    parse_answer("no tags here", ["cat", "dog"])                          -> ParsedAnswer(None, format_ok=False)

Rules (in order), applied to the text of the LAST <answer>…</answer> block:
1. a lone option letter, any case, optionally wrapped or followed by punctuation: "B", "b", "(B)", "B.", "B)", "B:",
   "[B]", "Option B", "Answer: B", or a letter followed by its text: "B) dog", "B. dog", "(B) dog";
2. otherwise the text of exactly one option (case, spacing and a trailing period ignored);
3. otherwise None (format_ok stays True: the tags were there, the content was not an option).
A completion without a closed <answer> block is a format failure (letter None).

An LLM judge (`judge_answers`, Qwen2.5-VL-32B-Instruct in production, as the paper verifies answers) maps a response
to the option it commits to, or to nothing. Judge modes (`JUDGE_MODES`): `unreadable` sends only the answers the
parser cannot read and never overrides a parsed letter; `all` sends every answer and the judge's letter decides.

Open-ended questions (no options; VQA-RAD, SLAKE, PathVQA "what/where" questions) are read with
`read_open_answer` and scored against the reference by normalised exact match and token F1 (`exact_match`,
`token_f1`), or by the judge (`judge_open`: does the response mean the reference?).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from components.common.records import LETTERS

JUDGE_MODES = ("unreadable", "all")
_ANSWER_RE = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.IGNORECASE | re.DOTALL)
# "B", "(B)", "[B]", "B.", "B)", "B:", "Option B", "Answer: B", "B) text", "B. text", "(B) text", "**B**"
_LETTER_RE = re.compile(
    r"^(?:(?:the\s+)?(?:final\s+)?(?:answer|option|choice)\s*(?:is)?\s*[:\-]?\s*)?"
    r"[\(\[\*]*([A-Za-z])[\)\]\*]*(?:[.):\-]\s*|\s+)?(.*)$",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True)
class ParsedAnswer:
    letter: str | None  # None when no option could be read
    format_ok: bool  # the completion followed the <answer>…</answer> format


def _normalise(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip().strip(".").strip().lower()


def _letter_from(body: str, options: list[str]) -> str | None:
    valid = LETTERS[: len(options)]
    body = body.strip()
    norm = _normalise(body)
    # Whole-option text first: an option such as "A" or "B cells" must not be read as a letter.
    text_matches = [LETTERS[i] for i, opt in enumerate(options) if _normalise(opt) == norm]
    if len(text_matches) == 1:
        return text_matches[0]
    m = _LETTER_RE.match(body)
    if m:
        letter, rest = m.group(1).upper(), _normalise(m.group(2) or "")
        # a lone letter, or a letter followed by exactly its own option text ("dog" is not D + "og")
        if letter in valid and rest in ("", _normalise(options[valid.index(letter)])):
            return letter
    return None


def parse_answer(completion: str, options: list[str]) -> ParsedAnswer:
    """Read the option letter from the last <answer> block (see the module docstring for the rules)."""
    blocks = _ANSWER_RE.findall(completion or "")
    if not blocks:
        return ParsedAnswer(None, False)
    return ParsedAnswer(_letter_from(blocks[-1], options), True)


# --------------------------------------------------------------------------------------------------------------
# Optional LLM judge for unreadable answers (production: Qwen2.5-VL-32B-Instruct through the sampling backend)
# --------------------------------------------------------------------------------------------------------------

JUDGE_INSTRUCTION = (
    "You grade answers to a multiple-choice question. Read the question, its options and a model's response. "
    "Decide which single option the response commits to. If it commits to none, or to more than one, reply NONE. "
    "Reply with only the option letter or NONE inside <answer> </answer> tags."
)


@dataclass(frozen=True)
class JudgeItem:
    question: str
    options: list[str]
    completion: str


def judge_messages(item: JudgeItem) -> list[dict]:
    """The judge's text-only prompt: the question, lettered options and the response (truncated to 2,000 chars)."""
    opts = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(item.options))
    text = (
        f"{JUDGE_INSTRUCTION}\n\nQuestion: {item.question}\nOptions:\n{opts}\n\n"
        f"Response:\n\"\"\"\n{item.completion[-2000:]}\n\"\"\""
    )
    return [{"role": "user", "content": [{"type": "text", "text": text}]}]


def read_judge_reply(reply: str, options: list[str]) -> str | None:
    """The judge's letter; NONE, an invalid letter or an unreadable reply give None."""
    blocks = _ANSWER_RE.findall(reply or "")
    body = (blocks[-1] if blocks else reply or "").strip()
    if body.upper().startswith("NONE"):
        return None
    return _letter_from(body, options)


def judge_answers(backend, items: list[JudgeItem]) -> list[str | None]:
    """Letters for unreadable answers, chosen by an LLM judge through `backend.greedy` (deterministic)."""
    if not items:
        return []
    from components.common.sampling import Prompt

    replies = backend.greedy([Prompt(judge_messages(it)) for it in items])
    return [read_judge_reply(r, it.options) for r, it in zip(replies, items)]


def check_judge_mode(mode: str) -> str:
    if mode not in JUDGE_MODES:
        raise ValueError(f"judge_mode={mode!r} is not known; choose one of {', '.join(JUDGE_MODES)}")
    return mode


# --------------------------------------------------------------------------------------------------------------
# Open-ended answers: normalised exact match and token F1 (SQuAD-style), or the judge
# --------------------------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = re.compile(r"[^\w\s]")


def normalise_answer(text: str) -> str:
    """Lower case, punctuation and the articles a/an/the removed, whitespace collapsed."""
    text = _PUNCT.sub(" ", (text or "").lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


def read_open_answer(completion: str) -> ParsedAnswer:
    """The text of the last <answer> block of an open-ended answer (in `letter`), or None and format_ok False."""
    blocks = _ANSWER_RE.findall(completion or "")
    if not blocks:
        return ParsedAnswer(None, False)
    text = re.sub(r"^(?:the\s+)?(?:final\s+)?answer\s*(?:is)?\s*[:\-]?\s*", "", blocks[-1].strip(), flags=re.I)
    return ParsedAnswer(text.strip() or None, True)


def exact_match(prediction: str | None, reference: str) -> bool:
    """Normalised exact match; an empty prediction never matches."""
    p = normalise_answer(prediction or "")
    return bool(p) and p == normalise_answer(reference)


def token_f1(prediction: str | None, reference: str) -> float:
    """F1 of the normalised tokens shared by prediction and reference (multiset overlap), 0 for an empty one."""
    from collections import Counter

    p, r = normalise_answer(prediction or "").split(), normalise_answer(reference).split()
    if not p or not r:
        return 0.0
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


OPEN_JUDGE_INSTRUCTION = (
    "You grade a model's answer to a question about a medical image against the reference answer. Reply YES if the "
    "response means the same as the reference (synonyms and extra words that do not change the meaning are fine), "
    "otherwise NO. Reply with only YES or NO inside <answer> </answer> tags."
)


@dataclass(frozen=True)
class OpenJudgeItem:
    question: str
    reference: str
    completion: str


def judge_open_messages(item: OpenJudgeItem) -> list[dict]:
    text = (
        f"{OPEN_JUDGE_INSTRUCTION}\n\nQuestion: {item.question}\nReference answer: {item.reference}\n\n"
        f"Response:\n\"\"\"\n{item.completion[-2000:]}\n\"\"\""
    )
    return [{"role": "user", "content": [{"type": "text", "text": text}]}]


def read_open_judge_reply(reply: str) -> bool:
    blocks = _ANSWER_RE.findall(reply or "")
    body = (blocks[-1] if blocks else reply or "").strip().upper()
    return body.startswith("YES")


def judge_open(backend, items: list[OpenJudgeItem]) -> list[bool]:
    """The judge's verdict (same meaning as the reference?) for open-ended answers, greedy through `backend`."""
    if not items:
        return []
    from components.common.sampling import Prompt

    replies = backend.greedy([Prompt(judge_open_messages(it)) for it in items])
    return [read_open_judge_reply(r) for r in replies]
