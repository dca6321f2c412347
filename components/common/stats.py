"""The statistics every step shares, pure functions: unbiased pass@k and percentile-bootstrap intervals.

    pass_at_k(n=16, c=3, k=4)                     # one question: n samples, c correct
    pass_curve(16, 3, 16)                         # [pass@1, ..., pass@16]
    mean_ci([0, 1, 1, 0])                         # 95% interval of a mean, questions resampled
    joint_ci(acc, passk)                          # Acc@1, Pass@K and their gap, resampled together
    curve_ci(curves)                              # {k: [lo, hi]} for every k of a Pass@k curve
    paired_ci(before, after)                      # after - before on the same questions, paired
    chance_pass_at_k(n_options=4, k=2)            # 0.4375: a uniform guesser's pass@k
    correction_k(n_options=4, kmax=16)            # 2: the largest k whose chance stays <= the ceiling (0.5)
    corrected(p, chance)                          # (p - chance) / (1 - chance): 0 = guessing, 1 = always right
    bootstrap_p_at_least(diffs, -0.05)            # one-sided bootstrap p-value of "mean(diffs) < -0.05"
    holm({"a": 0.01, "b": 0.04}, alpha=0.05)      # Holm step-down: which of a family of checks reject

Per question with n sampled answers of which c are correct (Chen et al. 2021):

    pass@k = 1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k / i)      (1 <= k <= n)

Intervals are percentile bootstraps over questions (seeded, numpy's linear-interpolated quantiles). The diagnosis,
the GRPO support guard and the evaluation import this one module, so every number of a run is computed one way.
"""

from __future__ import annotations

from collections.abc import Sequence

LEVEL = 0.95


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


def chance_pass_at_k(n_options: int, k: int) -> float:
    """pass@k of a uniform guesser among `n_options` options: 1 - (1 - 1/C)^k."""
    if n_options < 2:
        raise ValueError(f"n_options={n_options}: a multiple-choice question has at least 2 options")
    if k < 1:
        raise ValueError(f"k={k} must be >= 1")
    return 1.0 - (1.0 - 1.0 / n_options) ** k


def correction_k(n_options: int, kmax: int, ceiling: float = 0.5) -> int:
    """The largest k <= kmax whose chance pass@k stays at or below `ceiling` (at least 1), so that a chance correction
    never divides by a number near zero: k = 1 for yes/no questions, 2 for 4 options, 7 for 11 (ceiling 0.5)."""
    if not 0.0 < ceiling < 1.0:
        raise ValueError(f"chance ceiling {ceiling} must lie in (0, 1), e.g. 0.5")
    k = 1
    while k < kmax and chance_pass_at_k(n_options, k + 1) <= ceiling + 1e-12:
        k += 1
    return k


def corrected(value: float, chance: float) -> float:
    """Chance-corrected score (value - chance) / (1 - chance): 0 for a uniform guesser, 1 for always right, negative
    below chance. `chance` must be below 1."""
    if not chance < 1.0:
        raise ValueError(f"chance={chance} must be below 1 to correct for it")
    return (value - chance) / (1.0 - chance)


def pass_curve(n: int, c: int, kmax: int) -> list[float]:
    """[pass@1, ..., pass@kmax] for one question."""
    return [pass_at_k(n, c, k) for k in range(1, kmax + 1)]


def mean(xs: Sequence[float]) -> float:
    """Arithmetic mean; NaN for an empty sequence."""
    return sum(xs) / len(xs) if xs else float("nan")


def _resample_index(n: int, n_boot: int, seed: int):
    import numpy as np

    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _interval(means, level: float) -> list[float]:
    import numpy as np

    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2], axis=0)
    return [float(lo), float(hi)]


def mean_ci(values: Sequence[float], *, n_boot: int = 1000, seed: int = 0, level: float = LEVEL) -> list[float]:
    """Percentile-bootstrap interval of the mean of per-question `values` ([nan, nan] when there are none)."""
    import numpy as np

    if len(values) == 0:
        return [float("nan"), float("nan")]
    arr = np.asarray(values, dtype=float)
    return _interval(arr[_resample_index(arr.size, n_boot, seed)].mean(axis=1), level)


def joint_ci(
    acc: Sequence[float], passk: Sequence[float], *, n_boot: int = 1000, seed: int = 0, level: float = LEVEL
) -> dict[str, list[float]]:
    """Intervals of mean Acc@1, mean Pass@K and their gap, questions resampled jointly (the gap's interval then
    respects the correlation of the two)."""
    import numpy as np

    a = np.asarray(acc, dtype=float)
    p = np.asarray(passk, dtype=float)
    if a.shape != p.shape or a.size == 0:
        raise ValueError("joint_ci needs equally long, non-empty per-question lists")
    idx = _resample_index(a.size, n_boot, seed)
    ma, mp = a[idx].mean(axis=1), p[idx].mean(axis=1)
    return {"acc_at_1": _interval(ma, level), "pass_at_k": _interval(mp, level), "gap": _interval(mp - ma, level)}


def curve_ci(curves: Sequence[Sequence[float]], *, n_boot: int = 1000, seed: int = 0, level: float = LEVEL) -> dict:
    """{str(k): [lo, hi]}: the interval of Pass@k(D) for every k of per-question curves (questions resampled)."""
    import numpy as np

    c = np.asarray(curves, dtype=float)  # (questions, K)
    means = c[_resample_index(c.shape[0], n_boot, seed)].mean(axis=1)  # (n_boot, K)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2], axis=0)
    return {str(j + 1): [float(lo[j]), float(hi[j])] for j in range(c.shape[1])}


def paired_ci(
    before: Sequence[float], after: Sequence[float], *, n_boot: int = 1000, seed: int = 0, level: float = LEVEL
) -> dict:
    """{"value": mean(after - before), "ci": [lo, hi]} for per-question values of the same questions, in order."""
    if len(before) != len(after):
        raise ValueError(f"paired_ci: {len(before)} values before but {len(after)} after; pair the same questions")
    diffs = [b - a for a, b in zip(before, after)]
    return {"value": mean(diffs) if diffs else None, "ci": mean_ci(diffs, n_boot=n_boot, seed=seed, level=level)}


def bootstrap_p_at_least(
    values: Sequence[float], threshold: float, *, n_boot: int = 1000, seed: int = 0
) -> float:
    """One-sided bootstrap p-value for "the mean of `values` lies below `threshold`": the share of resampled means
    (questions resampled, same seeded index as `mean_ci`) that are at or above `threshold`, with the usual +1 in
    numerator and denominator so that it is never 0. Small p: the mean is confidently below the threshold."""
    import numpy as np

    if len(values) == 0:
        return 1.0
    arr = np.asarray(values, dtype=float)
    means = arr[_resample_index(arr.size, n_boot, seed)].mean(axis=1)
    return float((np.count_nonzero(means >= threshold - 1e-12) + 1) / (n_boot + 1))


def holm(pvalues: dict[str, float], alpha: float = 0.05) -> dict[str, dict]:
    """Holm's step-down correction over one family of checks: {name: {"p", "p_adjusted", "rejected"}}.

    Sort the m p-values ascending; the i-th smallest (i = 1..m) is compared with alpha / (m - i + 1) and the
    procedure stops at the first that is not below its level. The family-wise error rate stays at or below alpha
    whatever the dependence between the checks. Adjusted p-values are the running maximum of (m - i + 1) * p_(i),
    capped at 1; a check is rejected exactly when its adjusted p-value is below alpha."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha={alpha} must lie in (0, 1), e.g. 0.05")
    for name, p in pvalues.items():
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p-value of {name!r} is {p}; p-values lie in [0, 1]")
    order = sorted(pvalues, key=lambda n: (pvalues[n], n))
    m = len(order)
    out: dict[str, dict] = {}
    running = 0.0
    stopped = False
    for i, name in enumerate(order):
        p = pvalues[name]
        running = max(running, min(1.0, (m - i) * p))
        reject = not stopped and p < alpha / (m - i)
        stopped = stopped or not reject
        out[name] = {"p": p, "p_adjusted": running, "rejected": reject}
    return {name: out[name] for name in pvalues}
