"""Scoring: completions -> per-question outcomes -> Acc@1, the Pass@k curve, the support gap, paired deltas.

    outcome = score_question(rec, greedy_text, sample_texts)     # letters, correctness, format failures, truncation
    m = aggregate([outcome, ...], k=16)                          # {"n", "acc_at_1", "pass_at_k": {"1": …, "16": …}, …}
    d = paired_delta(base_outcomes, trained_outcomes, k=16)      # after - before, paired intervals, p of a loss

Reading answers and the metrics block are the measurement harness's (`components.common.harness`: the same
answer reading, judge and chance correction as the diagnosis and the GRPO guard); pass@k per question is the unbiased
estimator of `components.common.stats`. All fractions are 0-1.
"""

from __future__ import annotations

from components.common.harness import (
    QuestionOutcome,
    open_summary,
    question_pass,
    read_answers,
    support_summary,
)
from components.common.records import MCQRecord
from components.common.stats import bootstrap_p_at_least, pass_at_k, paired_ci

__all__ = ["pass_at_k", "QuestionOutcome", "score_question", "aggregate", "paired_delta", "stage_deltas", "STAGE_DELTAS"]

# Paired deltas (name, before, after): what the bridge added, what RL added on top of it, the whole post-training.
STAGE_DELTAS = (("base_to_sft", "base", "sft"), ("sft_to_rl", "sft", "trained"), ("base_to_final", "base", "trained"))

EMPTY = {"n": 0, "acc_at_1": None, "pass_at_k": {}, "gap": None, "ci": {}, "format_failure_rate": None,
         "truncation_rate": None, "mean_distinct_answers": None}


def score_question(rec: MCQRecord, greedy: str, samples: list[str]) -> QuestionOutcome:
    """One multiple-choice question read as the harness reads it (parser only)."""
    outcomes, _ = read_answers([rec], [samples], [greedy])
    return outcomes[0]


def aggregate(outcomes: list[QuestionOutcome], k: int, n_boot: int = 1000, seed: int = 0, ceiling: float = 0.5) -> dict:
    """The metrics block of a question set: `support_summary` (multiple choice: raw, chance and chance-corrected) or
    `open_summary` (open-ended: exact match or judged, token F1); an empty set gives n = 0 and no numbers."""
    if not outcomes:
        return dict(EMPTY)
    if all(o.n_options is None for o in outcomes):
        return open_summary(outcomes, k, n_boot=n_boot, seed=seed)
    return support_summary(outcomes, k, ceiling=ceiling, n_boot=n_boot, seed=seed)


def paired_delta(
    base: list[QuestionOutcome],
    trained: list[QuestionOutcome],
    k: int,
    n_boot: int = 1000,
    seed: int = 0,
    margin: float = 0.05,
) -> dict:
    """after - before on the same questions, for Acc@1 and Pass@K: the mean change, its paired bootstrap 95% interval,
    and `p_loss`, the one-sided bootstrap p-value of "the change lies below -margin" (for the transfer guard)."""
    by_id = {o.id: o for o in base}
    if {o.id for o in trained} != set(by_id):
        raise ValueError("base and trained outcomes cover different questions; score both models on the same set")
    pairs = [(by_id[t.id], t) for t in trained]
    kw = dict(n_boot=n_boot, seed=seed)
    out: dict = {"n": len(pairs), "margin": margin}
    for metric, value in (("acc_at_1", lambda o: float(o.greedy_correct)), ("pass_at_k", lambda o: question_pass(o, k))):
        before = [value(b) for b, _ in pairs]
        after = [value(t) for _, t in pairs]
        d = paired_ci(before, after, **kw)
        d["p_loss"] = bootstrap_p_at_least([a - b for b, a in zip(before, after)], -margin, **kw)
        out[metric] = d
    return out


def stage_deltas(
    per_model: dict[str, list[QuestionOutcome]], k: int, n_boot: int = 1000, seed: int = 0, margin: float = 0.05
) -> dict[str, dict]:
    """SFT and RL gains kept apart (pure): {name: paired_delta} for each of STAGE_DELTAS whose two models were scored
    (`per_model`: "base", optionally "sft", "trained"), every one on the same questions."""
    return {
        name: paired_delta(per_model[a], per_model[b], k, n_boot=n_boot, seed=seed, margin=margin)
        for name, a, b in STAGE_DELTAS
        if a in per_model and b in per_model
    }
