"""Scoring: completions -> per-question outcomes -> Acc@1, the Pass@k curve, the support gap, paired deltas.

    outcome = score_question(rec, greedy_text, sample_texts)     # letters, correctness, format failures
    m = aggregate([outcome, ...], k=16)                          # {"n", "acc_at_1", "pass_at_k": {"1": …, "16": …}, …}
    d = paired_delta(base_outcomes, trained_outcomes, k=16)      # after - before, with bootstrap intervals

All fractions are 0-1. Pass@k per question is the unbiased estimator 1 - C(n-c, k) / C(n, k) (Chen et al. 2021),
averaged over questions: `components.common.stats.pass_at_k`, the one estimator of the diagnosis, the GRPO guard and
the evaluation; intervals come from the same module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

from components.common.answers import parse_answer
from components.common.records import MCQRecord
from components.common.stats import mean_ci, paired_ci, pass_at_k

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
            "acc_at_1": mean_ci(acc, n_boot=n_boot, seed=seed),
            "pass_at_k": mean_ci(pk, n_boot=n_boot, seed=seed),
            "gap": mean_ci(gap, n_boot=n_boot, seed=seed),
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
    pairs = [(by_id[t.id], t) for t in trained]
    kw = dict(n_boot=n_boot, seed=seed)
    return {
        "n": len(pairs),
        "acc_at_1": paired_ci([float(b.greedy_correct) for b, _ in pairs], [float(t.greedy_correct) for _, t in pairs], **kw),
        "pass_at_k": paired_ci([_question_pass(b, k) for b, _ in pairs], [_question_pass(t, k) for _, t in pairs], **kw),
    }
