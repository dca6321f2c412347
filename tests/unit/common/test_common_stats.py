"""The shared statistics: pass@k against brute-force enumeration, bootstrap intervals (joint, paired, per k)."""

from __future__ import annotations

import itertools

import pytest

from components.common.stats import (
    chance_pass_at_k,
    correction_k,
    corrected,
    curve_ci,
    joint_ci,
    mean_ci,
    paired_ci,
    pass_at_k,
    pass_curve,
)


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of all k-subsets of n samples (c correct) that contain a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_equals_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_edges_and_errors():
    assert pass_at_k(16, 0, 16) == 0.0  # no correct sample: no subset passes
    assert pass_at_k(16, 1, 16) == 1.0  # k = n: the one correct sample is always drawn
    assert pass_at_k(16, 4, 1) == pytest.approx(4 / 16)  # pass@1 = c / n
    assert pass_at_k(1000, 1, 1) == pytest.approx(1e-3)  # large n stays stable (product form)
    with pytest.raises(ValueError, match="k=17"):
        pass_at_k(16, 2, 17)
    with pytest.raises(ValueError, match="c=5"):
        pass_at_k(4, 5, 1)


def test_bootstrap_contains_point_narrows_and_is_seeded():
    import random

    rng = random.Random(0)
    small = [float(rng.random() < 0.4) for _ in range(30)]
    big = [float(rng.random() < 0.4) for _ in range(600)]
    p_small = [rng.random() for _ in range(30)]
    p_big = [rng.random() for _ in range(600)]
    ci_s = joint_ci(small, p_small, seed=1)
    ci_b = joint_ci(big, p_big, seed=1)
    for name, xs in (("acc_at_1", small), ("pass_at_k", p_small)):
        lo, hi = ci_s[name]
        assert lo <= sum(xs) / len(xs) <= hi
    gap = sum(p_small) / 30 - sum(small) / 30
    assert ci_s["gap"][0] <= gap <= ci_s["gap"][1]
    width = lambda ci: ci["pass_at_k"][1] - ci["pass_at_k"][0]  # noqa: E731
    assert width(ci_b) < width(ci_s) / 2  # 20x the questions: about 1/sqrt(20) the width
    assert joint_ci(small, p_small, seed=1) == ci_s  # same seed, same interval
    assert joint_ci(small, p_small, seed=2) != ci_s


def test_paired_interval_pairs_questions_and_checks_lengths():
    before = [0.0, 0.0, 1.0, 1.0]
    after = [1.0, 0.0, 1.0, 1.0]
    d = paired_ci(before, after, n_boot=500, seed=0)
    assert d["value"] == pytest.approx(0.25)  # one question of four improved
    assert d["ci"][0] <= 0.25 <= d["ci"][1] and d["ci"][0] >= 0.0  # a difference never below 0 here
    assert paired_ci(after, after, n_boot=100)["ci"] == [0.0, 0.0]  # identical models: no uncertainty
    with pytest.raises(ValueError, match="pair the same questions"):
        paired_ci([1.0], [1.0, 0.0])
    assert mean_ci([]) != mean_ci([])  # no questions: [nan, nan], which equals nothing


def test_curve_interval_per_k_contains_the_curve():
    curves = [pass_curve(8, c, 8) for c in (0, 1, 2, 4, 8)]
    band = curve_ci(curves, n_boot=300, seed=0)
    assert list(band) == [str(k) for k in range(1, 9)]
    for k in range(1, 9):
        point = sum(c[k - 1] for c in curves) / len(curves)
        assert band[str(k)][0] <= point <= band[str(k)][1]


@pytest.mark.parametrize(
    "options, k16, k_used",
    [
        (2, 0.99998, 1),  # yes/no: pass@16 is near certain by guessing; only k = 1 keeps chance <= 0.5
        (4, 0.99, 2),  # 4 options: chance pass@2 = 0.4375, pass@3 = 0.578
        (11, 0.78, 7),  # 11 organs: chance pass@7 = 0.487, pass@8 = 0.533
    ],
)
def test_chance_and_the_k_a_correction_uses(options, k16, k_used):
    assert chance_pass_at_k(options, 16) == pytest.approx(k16, abs=5e-3)
    assert correction_k(options, 16) == k_used
    assert chance_pass_at_k(options, k_used) <= 0.5 < chance_pass_at_k(options, k_used + 1)
    assert correction_k(options, 1) == 1 and correction_k(2, 16, ceiling=0.9) == 3  # capped by K; the ceiling moves it
    # the unbiased estimator of a uniform guesser equals the closed form in expectation: n = 4 options, c = n / 4
    assert pass_at_k(16, 4, 2) == pytest.approx(1 - (12 * 11) / (16 * 15))


def test_corrected_maps_chance_to_zero_and_certainty_to_one():
    assert corrected(0.4375, 0.4375) == 0.0 and corrected(1.0, 0.4375) == 1.0
    assert corrected(0.0, 0.5) == -1.0  # below chance is negative, not clipped
    with pytest.raises(ValueError, match="below 1"):
        corrected(1.0, 1.0)


# (p-values, expected rejected at alpha 0.05): Holm's step-down, worked by hand
HOLM_CASES = [
    ({"a": 0.01, "b": 0.04, "c": 0.03}, {"a"}),  # 0.01 < 0.05/3; next 0.03 > 0.05/2 stops
    ({"a": 0.001, "b": 0.02, "c": 0.04}, {"a", "b", "c"}),  # 0.001 < .0167, 0.02 < .025, 0.04 < .05
    ({"a": 0.03, "b": 0.03}, set()),  # 0.03 > 0.05/2: stops at once, the second never tested
    ({"a": 0.049}, {"a"}),  # one check: the plain level
    ({}, set()),  # no checks: nothing rejected
]


@pytest.mark.parametrize("pvalues, rejected", HOLM_CASES)
def test_holm(pvalues, rejected):
    from components.common.stats import holm

    out = holm(pvalues, 0.05)
    assert {n for n, r in out.items() if r["rejected"]} == rejected
    assert all(r["rejected"] == (r["p_adjusted"] < 0.05) for r in out.values())  # adjusted p agrees


def test_bootstrap_p_of_a_loss():
    from components.common.stats import bootstrap_p_at_least

    assert bootstrap_p_at_least([-1.0] * 10, -0.05, n_boot=200) == pytest.approx(1 / 201)  # a sure loss
    assert bootstrap_p_at_least([0.0] * 10, -0.05, n_boot=200) == 1.0  # no change: never below -margin
    assert bootstrap_p_at_least([], -0.05) == 1.0
