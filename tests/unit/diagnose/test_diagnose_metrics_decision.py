"""pass@k against brute-force enumeration, bootstrap interval sanity, and the decision table."""

from __future__ import annotations

import itertools

import pytest

from components.diagnose.decision import decide
from components.diagnose.metrics import QuestionResult, bootstrap_ci, pass_at_k, summarise


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


def _results(n_q: int, frac_greedy: float, correct_per_q: int, n: int = 8) -> list[QuestionResult]:
    out = []
    for i in range(n_q):
        c = correct_per_q if i % 2 == 0 else 0
        out.append(QuestionResult(str(i), "radiology", "t", i < frac_greedy * n_q, [j < c for j in range(n)],
                                  ["A"] * c + ["B"] * (n - c), [True] * n))
    return out


def test_summarise_hand_computed():
    rs = _results(4, 0.5, 2, n=4)  # questions 0, 2 have 2/4 correct; 1, 3 none; greedy right on 0, 1
    m = summarise(rs, k=2, n_boot=200)
    # pass@1 = mean(2/4, 0, 2/4, 0) = 0.25; pass@2 = mean(1 - C(2,2)/C(4,2) = 5/6, 0, 5/6, 0) = 5/12
    assert m["pass_at_k"]["1"] == pytest.approx(0.25)
    assert m["pass_at_k"]["2"] == pytest.approx(5 / 12)
    assert m["acc_at_1"] == 0.5
    assert m["gap"] == pytest.approx(5 / 12 - 0.5)
    assert m["mean_distinct_answers"] == pytest.approx(1.5)  # {A, B} twice, {B} twice
    assert m["format_failure_rate"] == 0.0


def test_summarise_rejects_too_few_samples():
    with pytest.raises(ValueError, match="n >= k"):
        summarise(_results(2, 0.5, 1, n=4), k=8)


def test_bootstrap_contains_point_narrows_and_is_seeded():
    import random

    rng = random.Random(0)
    small = [float(rng.random() < 0.4) for _ in range(30)]
    big = [float(rng.random() < 0.4) for _ in range(600)]
    p_small = [rng.random() for _ in range(30)]
    p_big = [rng.random() for _ in range(600)]
    ci_s = bootstrap_ci(small, p_small, seed=1)
    ci_b = bootstrap_ci(big, p_big, seed=1)
    for name, xs in (("acc_at_1", small), ("pass_at_k", p_small)):
        lo, hi = ci_s[name]
        assert lo <= sum(xs) / len(xs) <= hi
    gap = sum(p_small) / 30 - sum(small) / 30
    assert ci_s["gap"][0] <= gap <= ci_s["gap"][1]
    width = lambda ci: ci["pass_at_k"][1] - ci["pass_at_k"][0]  # noqa: E731
    assert width(ci_b) < width(ci_s) / 2  # 20x the questions: about 1/sqrt(20) the width
    assert bootstrap_ci(small, p_small, seed=1) == ci_s  # same seed, same interval
    assert bootstrap_ci(small, p_small, seed=2) != ci_s


def M(p: float, lo: float, hi: float, acc: float = 0.2, k: int = 16, n: int = 100) -> dict:
    return {"n": n, "acc_at_1": acc, "pass_at_k": {"1": acc, str(k): p}, "gap": p - acc,
            "ci": {"acc_at_1": [acc, acc], "pass_at_k": [lo, hi], "gap": [0, 0]}}


@pytest.mark.parametrize(
    "overall, force, ambiguous, branch, forced, is_amb",
    [
        (M(0.30, 0.20, 0.40), "auto", "bridge", "bridge", False, False),  # whole interval below tau: bridge
        (M(0.70, 0.60, 0.80), "auto", "bridge", "sharpen", False, False),  # whole interval above tau: sharpen
        (M(0.55, 0.50, 0.60), "auto", "bridge", "sharpen", False, False),  # ci_low exactly tau counts as >= tau
        (M(0.45, 0.40, 0.499), "auto", "sharpen", "bridge", False, False),  # ci_high just below tau: bridge, policy unused
        (M(0.52, 0.45, 0.60), "auto", "bridge", "bridge", False, True),  # straddles tau: default conservative bridge
        (M(0.52, 0.45, 0.60), "auto", "sharpen", "sharpen", False, True),  # straddles tau: operator policy sharpen
        (M(0.70, 0.60, 0.80), "bridge", "bridge", "bridge", True, False),  # forced bridge over a sharpen measurement
        (M(0.30, 0.20, 0.40), "sharpen", "bridge", "sharpen", True, False),  # forced sharpen over a bridge measurement
    ],
)
def test_decide_table(overall, force, ambiguous, branch, forced, is_amb):
    d = decide(overall, {}, tau=0.5, force=force, ambiguous=ambiguous)
    assert (d.branch, d.forced, d.ambiguous) == (branch, forced, is_amb)
    assert "Pass@16 = " in d.rule and "tau = 0.50" in d.rule  # the numbers that chose the branch are recorded
    if forced:
        assert "FORCED" in d.rule and d.measured_branch != d.branch


def test_decide_per_modality_and_weak_lists():
    per_mod = {"radiology": M(0.2, 0.1, 0.3), "microscopy": M(0.9, 0.8, 0.95), "visible light": M(0.5, 0.3, 0.7)}
    per_task = {"organamnist": M(0.2, 0.1, 0.3), "pathmnist": M(0.9, 0.8, 0.95)}
    d = decide(M(0.55, 0.52, 0.58), per_mod, tau=0.5, per_task=per_task)
    assert d.branch == "sharpen"  # overall support confidently above tau
    assert {g: v["branch"] for g, v in d.per_modality.items()} == {
        "radiology": "bridge", "microscopy": "sharpen", "visible light": "bridge"}  # last one: ambiguous -> bridge
    assert d.per_modality["visible light"]["ambiguous"] is True
    assert d.weak_modalities == ["radiology", "visible light"]
    assert d.weak_tasks == ["organamnist"]


@pytest.mark.parametrize("kw, msg", [({"tau": 1.5}, "tau=1.5"), ({"force": "rl"}, "force='rl'"),
                                     ({"ambiguous": "auto"}, "ambiguous='auto'")])
def test_decide_rejects_bad_knobs(kw, msg):
    with pytest.raises(ValueError, match=msg):
        decide(M(0.5, 0.4, 0.6), {}, **kw)
