"""Support metrics of a diagnosed question set, pure functions: Acc@1, the Pass@k curve, support gap, intervals.

Pass@k(D) is the mean over the questions of D of the unbiased per-question estimator
(`components.common.stats.pass_at_k`), for every k = 1..K. Acc@1(D) is the greedy answer's accuracy,
gap Δ(D) = Pass@K(D) - Acc@1(D). Intervals: percentile bootstrap over questions (seeded), resampling each question's
(greedy correct, pass@K) pair jointly so the gap's interval respects their correlation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from components.common.stats import curve_ci, joint_ci, mean, pass_curve


@dataclass
class QuestionResult:
    """What the metrics need from one diagnosed question."""

    id: str
    group: str  # modality group (radiology / microscopy / visible light, or meta.group / modality)
    task: str
    greedy_correct: bool
    sample_correct: list[bool]  # one per sampled answer
    sample_letters: list[str | None] = field(default_factory=list)  # parsed letters (None: unreadable)
    sample_format_ok: list[bool] = field(default_factory=list)
    greedy_format_ok: bool = True


def summarise(results: list[QuestionResult], k: int, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """The metrics block M of diagnosis.json for one set of questions (see components/diagnose/README.md)."""
    if not results:
        raise ValueError("no questions to summarise")
    curves = []
    for r in results:
        n = len(r.sample_correct)
        if n < k:
            raise ValueError(f"question {r.id!r}: {n} samples but k={k}; draw n >= k samples per question")
        curves.append(pass_curve(n, sum(r.sample_correct), k))
    acc = [float(r.greedy_correct) for r in results]
    passk = [c[k - 1] for c in curves]
    curve = {str(j + 1): mean([c[j] for c in curves]) for j in range(k)}
    n_samples = sum(len(r.sample_correct) for r in results)
    format_failures = sum(sum(1 for ok in r.sample_format_ok if not ok) for r in results)
    distinct = [len({x for x in r.sample_letters if x is not None}) for r in results]
    return {
        "n": len(results),
        "acc_at_1": mean(acc),
        "pass_at_k": curve,
        "gap": curve[str(k)] - mean(acc),
        "ci": joint_ci(acc, passk, n_boot=n_boot, seed=seed),
        "ci_curve": curve_ci(curves, n_boot=n_boot, seed=seed),
        "format_failure_rate": format_failures / n_samples if n_samples else 0.0,
        "greedy_format_failure_rate": mean([0.0 if r.greedy_format_ok else 1.0 for r in results]),
        "mean_distinct_answers": mean(distinct),
    }


def summarise_by(results: list[QuestionResult], key: str, k: int, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """{value of `key` ("task" or "group"): M}, in first-seen order."""
    groups: dict[str, list[QuestionResult]] = {}
    for r in results:
        groups.setdefault(getattr(r, key), []).append(r)
    return {g: summarise(rs, k, n_boot=n_boot, seed=seed) for g, rs in groups.items()}
