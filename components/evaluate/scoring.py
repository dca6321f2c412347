"""Scoring: completions -> per-question outcomes -> Acc@1, the Pass@k curve, the support gap, paired deltas.

    outcome = score_question(rec, greedy_text, sample_texts)     # letters, correctness, format failures
    m = aggregate([outcome, ...], k=16)                          # {"n", "acc_at_1", "pass_at_k": {"1": …, "16": …}, …}
    d = paired_delta(base_outcomes, trained_outcomes, k=16)      # after - before, with bootstrap intervals

All fractions are 0-1. Pass@k per question is the unbiased estimator 1 - C(n-c, k) / C(n, k) (Chen et al. 2021),
averaged over questions: the diagnose step's `components.diagnose.metrics.pass_at_k`, imported so that diagnosis and
evaluation use one estimator.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

from components.common.answers import parse_answer
from components.common.records import MCQRecord
from components.diagnose.metrics import pass_at_k

__all__ = [
    "pass_at_k",
    "option_letter_scorer",
    "SCORERS",
    "QuestionOutcome",
    "score_question",
    "aggregate",
    "paired_delta",
]


def option_letter_scorer(completion: str, rec: MCQRecord) -> tuple[str | None, bool, bool]:
    """(parsed letter, correct, format_ok) for one completion: the letter in <answer>…</answer> vs rec.answer."""
    parsed = parse_answer(completion, rec.options)
    return parsed.letter, parsed.letter == rec.answer, parsed.format_ok


SCORERS: dict[str, Callable[[str, MCQRecord], tuple[str | None, bool, bool]]] = {"option_letter": option_letter_scorer}


@dataclass
class QuestionOutcome:
    id: str
    task: str
    answer: str
    greedy_letter: str | None
    greedy_correct: bool
    sample_letters: list[str | None]
    n_correct: int  # correct samples among the len(sample_letters)
    n_format_fail: int  # greedy + samples that broke the <answer> format

    def to_dict(self) -> dict:
        return asdict(self)


def score_question(rec: MCQRecord, greedy: str, samples: list[str], scorer: str = "option_letter") -> QuestionOutcome:
    fn = SCORERS[scorer]
    g_letter, g_ok, g_fmt = fn(greedy, rec)
    scored = [fn(s, rec) for s in samples]
    return QuestionOutcome(
        id=rec.id,
        task=rec.task,
        answer=rec.answer,
        greedy_letter=g_letter,
        greedy_correct=g_ok,
        sample_letters=[s[0] for s in scored],
        n_correct=sum(s[1] for s in scored),
        n_format_fail=(not g_fmt) + sum(not s[2] for s in scored),
    )


def _question_pass(o: QuestionOutcome, k: int) -> float:
    return pass_at_k(len(o.sample_letters), o.n_correct, k)


def _bootstrap(values: list[float], n_boot: int, seed: int) -> list[float]:
    """95% percentile interval of the mean of `values` (questions resampled with replacement)."""
    import numpy as np

    if not values:
        return [float("nan"), float("nan")]
    arr = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, len(arr), size=(n_boot, len(arr)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return [float(lo), float(hi)]


def aggregate(outcomes: list[QuestionOutcome], k: int, n_boot: int = 1000, seed: int = 0) -> dict:
    """Acc@1, the Pass@k curve (k = 1…K), gap = Pass@K - Acc@1, bootstrap intervals, format failures, distinct
    answers. The shape matches diagnosis.json's per-group entries."""
    n = len(outcomes)
    if n == 0:
        return {
            "n": 0,
            "acc_at_1": None,
            "pass_at_k": {},
            "gap": None,
            "ci": {},
            "format_failure_rate": None,
            "mean_distinct_answers": None,
        }
    acc = [float(o.greedy_correct) for o in outcomes]
    pk = [_question_pass(o, k) for o in outcomes]
    gap = [p - a for p, a in zip(pk, acc)]
    n_completions = sum(len(o.sample_letters) + 1 for o in outcomes)
    return {
        "n": n,
        "acc_at_1": sum(acc) / n,
        "pass_at_k": {str(j): sum(_question_pass(o, j) for o in outcomes) / n for j in range(1, k + 1)},
        "gap": sum(gap) / n,
        "ci": {
            "acc_at_1": _bootstrap(acc, n_boot, seed),
            "pass_at_k": _bootstrap(pk, n_boot, seed),
            "gap": _bootstrap(gap, n_boot, seed),
        },
        "format_failure_rate": sum(o.n_format_fail for o in outcomes) / n_completions,
        "mean_distinct_answers": sum(len({x for x in o.sample_letters if x is not None}) for o in outcomes) / n,
    }


def paired_delta(
    base: list[QuestionOutcome], trained: list[QuestionOutcome], k: int, n_boot: int = 1000, seed: int = 0
) -> dict:
    """after - before on the same questions, for Acc@1 and Pass@K, with paired bootstrap 95% intervals."""
    by_id = {o.id: o for o in base}
    if {o.id for o in trained} != set(by_id):
        raise ValueError("base and trained outcomes cover different questions; score both models on the same set")
    d_acc = [float(t.greedy_correct) - float(by_id[t.id].greedy_correct) for t in trained]
    d_pk = [_question_pass(t, k) - _question_pass(by_id[t.id], k) for t in trained]
    n = len(trained)
    return {
        "n": n,
        "acc_at_1": {"value": sum(d_acc) / n if n else None, "ci": _bootstrap(d_acc, n_boot, seed)},
        "pass_at_k": {"value": sum(d_pk) / n if n else None, "ci": _bootstrap(d_pk, n_boot, seed)},
    }
