"""The diagnosis metrics block (hand-computed) and the decision table."""

from __future__ import annotations

import pytest

from components.diagnose.decision import decide
from components.diagnose.metrics import QuestionResult, summarise


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
