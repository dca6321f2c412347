"""Support metrics of a diagnosed question set, grouped: the metrics block M per task and per modality group.

M itself (raw Acc@1, the Pass@k curve, the support gap, a uniform guesser's curve beside them and the
chance-corrected Acc@1 / Pass@K with bootstrap intervals) is `components.common.harness.support_summary`, the one
definition the diagnosis, the evaluation and the GRPO support guard share.
"""

from __future__ import annotations

from components.common.harness import QuestionOutcome, support_summary


def summarise(
    results: list[QuestionOutcome], k: int, *, ceiling: float = 0.5, n_boot: int = 1000, seed: int = 0
) -> dict:
    """The metrics block M of diagnosis.json for one set of questions (see components/diagnose/README.md)."""
    return support_summary(results, k, ceiling=ceiling, n_boot=n_boot, seed=seed)


def summarise_by(
    results: list[QuestionOutcome], key: str, k: int, *, ceiling: float = 0.5, n_boot: int = 1000, seed: int = 0
) -> dict:
    """{value of `key` ("task" or "group"): M}, in first-seen order."""
    groups: dict[str, list[QuestionOutcome]] = {}
    for r in results:
        groups.setdefault(getattr(r, key), []).append(r)
    return {g: summarise(rs, k, ceiling=ceiling, n_boot=n_boot, seed=seed) for g, rs in groups.items()}
