"""Rewards and the consistency-aware (GRPO-CARE) arithmetic, as plain pure functions.

Reward functions follow TRL's signature: `f(completions, answer, options=None, **kwargs) -> list[float]`, one
reward per completion; TRL passes every dataset column (here `answer`, `options`, `image`) as a keyword list.
A completion is TRL's conversational form `[{"role": "assistant", "content": text}]` or a plain string.

    accuracy_reward([[{"role": "assistant", "content": "<answer>B</answer>"}]], answer=["B"], options=[["x", "y"]])
    -> [1.0]
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from components.common.answers import parse_answer

# <think>…</think> first, then <answer>…</answer>, nothing but whitespace around them.
_FORMAT_RE = re.compile(r"^\s*<think>.*?</think>\s*<answer>.*?</answer>\s*$", re.DOTALL)
# The direct format: the <answer>…</answer> block alone.
_DIRECT_RE = re.compile(r"^\s*<answer>.*?</answer>\s*$", re.DOTALL)
_ANSWER_SPAN_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def completion_text(completion: Any) -> str:
    """Text of one completion in TRL's conversational (`[{"content": …}]`) or standard (str) form."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content") or "")
    raise ValueError(f"completion {completion!r} is neither a string nor a list of chat messages")


def _default_options(answer: Sequence[str], options: Sequence[Sequence[str]] | None) -> list[list[str]]:
    if options is not None:
        return [list(o) for o in options]
    # Without an options column only option letters can be read; allow letters up to the answer's own letter.
    return [["?"] * max(4, "ABCDEFGHIJKLMNOPQRSTUVWXYZ".index(a) + 1) for a in answer]


def accuracy_reward(
    completions: Sequence[Any], answer: Sequence[str], options: Sequence[Sequence[str]] | None = None, **kwargs
) -> list[float]:
    """1.0 when the option letter read from the completion's <answer> block equals `answer`, else 0.0."""
    if len(completions) != len(answer):
        raise ValueError(f"accuracy_reward got {len(completions)} completions but {len(answer)} answers")
    opts = _default_options(answer, options)
    out = []
    for comp, ans, opt in zip(completions, answer, opts, strict=True):
        parsed = parse_answer(completion_text(comp), opt)
        out.append(1.0 if parsed.letter is not None and parsed.letter == ans else 0.0)
    return out


def format_ok(text: str, fmt: str = "think") -> bool:
    """Whether `text` has the shape the prompt format asks for.

    think / scaffold: exactly one `<think>…</think>` followed by exactly one `<answer>…</answer>`, nothing else
    around them; direct: exactly one `<answer>…</answer>` and no `<think>` block."""
    if fmt == "direct":
        return (
            _DIRECT_RE.match(text) is not None
            and text.count("<answer>") == 1
            and text.count("</answer>") == 1
            and "<think>" not in text
            and "</think>" not in text
        )
    return (
        _FORMAT_RE.match(text) is not None
        and text.count("<think>") == 1
        and text.count("</think>") == 1
        and text.count("<answer>") == 1
        and text.count("</answer>") == 1
    )


def format_reward(completions: Sequence[Any], **kwargs) -> list[float]:
    """1.0 when the completion is exactly `<think>…</think>` followed by `<answer>…</answer>`, else 0.0."""
    return [1.0 if format_ok(completion_text(c), "think") else 0.0 for c in completions]


def make_format_reward(fmt: str):
    """The format reward of a prompt format (named `format_reward`, as TRL logs it): `format_ok(text, fmt)`."""
    from components.common.prompts import check_prompt_format

    check_prompt_format(fmt)

    def format_reward(completions: Sequence[Any], **kwargs) -> list[float]:
        return [1.0 if format_ok(completion_text(c), fmt) else 0.0 for c in completions]

    format_reward.__doc__ = f"1.0 when the completion has the {fmt!r} prompt format's shape (format_ok), else 0.0."
    return format_reward


# ---------------------------------------------------------------------------------------------------------------
# GRPO-CARE (arXiv 2506.16141): consistency bonus and EMA reference, as arithmetic on plain numbers.


def consistency_bonus(
    accuracy: Sequence[float],
    confidence: Sequence[float],
    bonus: float = 0.5,
    upper_bound: float | None = 0.95,
    margin: float | None = 0.01,
) -> list[float]:
    """Consistency bonus for ONE group of completions of the same prompt (GRPO-CARE, public implementation).

    `confidence[i]` is the reference model's likelihood of completion i's answer given its own reasoning (the mean
    per-token probability of the answer tokens). Steps, as in the authors' code:
      1. clip confidences at `upper_bound` (so over-confident references stop ranking completions);
      2. "high-accuracy" completions: accuracy > 0.1 and >= the group's mean accuracy;
      3. among those, the bonus goes to completions whose clipped confidence is >= (mean clipped confidence of the
         high-accuracy completions) - `margin`;
      4. bonus = `bonus` x accuracy for them, 0 for the others.
    """
    if len(accuracy) != len(confidence):
        raise ValueError(f"consistency_bonus: {len(accuracy)} accuracies but {len(confidence)} confidences")
    if not accuracy:
        return []
    conf = [min(c, upper_bound) if upper_bound is not None else c for c in confidence]
    mean_acc = sum(accuracy) / len(accuracy)
    accurate = [a > 0.1 and a >= mean_acc for a in accuracy]
    selected = [c for c, ok in zip(conf, accurate) if ok]
    if not selected:
        return [0.0] * len(accuracy)
    threshold = sum(selected) / len(selected) - (margin or 0.0)
    return [bonus * a if ok and c >= threshold else 0.0 for a, c, ok in zip(accuracy, conf, accurate)]


def ema_update(ema: float, online: float, decay: float) -> float:
    """One EMA step of a reference weight: decay * ema + (1 - decay) * online (GRPO-CARE: decay 0.995)."""
    return decay * ema + (1.0 - decay) * online


def ema_alpha(decay: float) -> float:
    """The mix-in weight TRL's `SyncRefModelCallback` uses (target <- (1-alpha) target + alpha policy): 1 - decay."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"EMA decay {decay} must be in [0, 1)")
    return 1.0 - decay


def answer_token_mask(pieces: Sequence[str]) -> list[bool]:
    """Which tokens of a completion (given as its decoded per-token strings) lie inside the LAST <answer>…</answer>.

    A token counts when it overlaps the answer text (a BPE piece such as `>B` that straddles the tag and the letter
    is kept, so the letter is never lost); tokens wholly inside the tags do not. Works whether the tokenizer has
    `<answer>` as one token (tiny model) or splits it into several (Qwen2.5-VL).
    """
    text = "".join(pieces)
    spans = list(_ANSWER_SPAN_RE.finditer(text))
    if not spans:
        return [False] * len(pieces)
    lo, hi = spans[-1].span(1)
    mask, pos = [], 0
    for p in pieces:
        start, end = pos, pos + len(p)
        mask.append(len(p) > 0 and start < hi and end > lo)
        pos = end
    return mask


def mean_probability(logps: Sequence[float]) -> float:
    """exp(mean log-probability): the confidence GRPO-CARE reads from the reference model (0.0 for no tokens)."""
    if not logps:
        return 0.0
    return math.exp(sum(logps) / len(logps))
