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
