"""Support metrics, pure functions: unbiased pass@k, Acc@1, support gap, bootstrap intervals.

Per question q with n sampled answers of which c are correct (Chen et al. 2021):

    pass@k(q) = 1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k / i)      (k <= n)

Pass@k(D) is its mean over the questions of D, for every k = 1..K. Acc@1(D) is the greedy answer's accuracy,
gap Δ(D) = Pass@K(D) - Acc@1(D). Intervals: percentile bootstrap over questions (seeded), resampling each question's
(greedy correct, pass@K) pair jointly so the gap's interval respects their correlation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one question: n samples, c correct, 1 <= k <= n (numerically stable product form)."""
    if not 0 <= c <= n:
        raise ValueError(f"correct count c={c} must lie in [0, n={n}]")
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must lie in [1, n={n}]: draw at least k samples per question")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def pass_curve(n: int, c: int, kmax: int) -> list[float]:
    """[pass@1, …, pass@kmax] for one question."""
    return [pass_at_k(n, c, k) for k in range(1, kmax + 1)]


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


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _percentile(sorted_xs: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of an already sorted list."""
    if not sorted_xs:
        return float("nan")
    pos = (len(sorted_xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def bootstrap_ci(
    acc: Sequence[float], passk: Sequence[float], *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, list[float]]:
    """Percentile-bootstrap intervals for mean Acc@1, mean Pass@K and their gap, questions resampled jointly."""
    import numpy as np

    a = np.asarray(acc, dtype=float)
    p = np.asarray(passk, dtype=float)
    if a.shape != p.shape or a.size == 0:
        raise ValueError("bootstrap_ci needs equally long, non-empty per-question lists")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))
    ma, mp = a[idx].mean(axis=1), p[idx].mean(axis=1)
    lo_q, hi_q = (1 - level) / 2, 1 - (1 - level) / 2
    out = {}
    for name, xs in (("acc_at_1", ma), ("pass_at_k", mp), ("gap", mp - ma)):
        s = sorted(xs.tolist())
        out[name] = [_percentile(s, lo_q), _percentile(s, hi_q)]
    return out


def curve_ci(curves: Sequence[Sequence[float]], *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """{str(k): [lo, hi]}: percentile-bootstrap interval of Pass@k(D) for every k (questions resampled)."""
    import numpy as np

    c = np.asarray(curves, dtype=float)  # (questions, K)
    rng = np.random.default_rng(seed)
    means = c[rng.integers(0, c.shape[0], size=(n_boot, c.shape[0]))].mean(axis=1)  # (n_boot, K)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2], axis=0)
    return {str(j + 1): [float(lo[j]), float(hi[j])] for j in range(c.shape[1])}


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
    curve = {str(j + 1): _mean([c[j] for c in curves]) for j in range(k)}
    n_samples = sum(len(r.sample_correct) for r in results)
    format_failures = sum(sum(1 for ok in r.sample_format_ok if not ok) for r in results)
    distinct = [len({x for x in r.sample_letters if x is not None}) for r in results]
    return {
        "n": len(results),
        "acc_at_1": _mean(acc),
        "pass_at_k": curve,
        "gap": curve[str(k)] - _mean(acc),
        "ci": bootstrap_ci(acc, passk, n_boot=n_boot, seed=seed),
        "ci_curve": curve_ci(curves, n_boot=n_boot, seed=seed),
        "format_failure_rate": format_failures / n_samples if n_samples else 0.0,
        "greedy_format_failure_rate": _mean([0.0 if r.greedy_format_ok else 1.0 for r in results]),
        "mean_distinct_answers": _mean(distinct),
    }


def summarise_by(results: list[QuestionResult], key: str, k: int, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """{value of `key` ("task" or "group"): M}, in first-seen order."""
    groups: dict[str, list[QuestionResult]] = {}
    for r in results:
        groups.setdefault(getattr(r, key), []).append(r)
    return {g: summarise(rs, k, n_boot=n_boot, seed=seed) for g, rs in groups.items()}
