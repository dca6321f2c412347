"""The support guard's pure parts: chance-corrected watch points (hand-computed), the collapse rule, the choice of
the checkpoint to ship, table-driven."""

from __future__ import annotations

import math

import pytest

from components.grpo.guard import (
    QuestionOutcome,
    best_before,
    collapsed,
    guard_decision,
    summarize_support,
    within_tolerance,
)


def test_summarize_support_hand_computed():
    outcomes = [
        QuestionOutcome(n_options=4, n_samples=4, n_correct=2, greedy_correct=True),
        QuestionOutcome(n_options=2, n_samples=4, n_correct=0, greedy_correct=False),
    ]
    point = summarize_support(outcomes, k=4)
    # raw: pass@4 = (1 + 0) / 2; Acc@1 = (1 + 0) / 2
    assert point["pass_at_k"] == 0.5 and point["acc_at_1"] == 0.5
    # corrected pass, 4 options: k_q = 2, pass@2 with n=4, c=2 = 1 - C(2,2)/C(4,2) = 5/6; chance 1 - 0.75^2 = 0.4375
    # -> (5/6 - 0.4375) / 0.5625; 2 options: k_q = 1, pass@1 = 0, chance 0.5 -> -1
    q1 = (5 / 6 - 0.4375) / 0.5625
    assert math.isclose(point["pass_corrected"], (q1 - 1) / 2)
    # corrected Acc@1: (1 - 1/4) / (3/4) = 1 and (0 - 1/2) / (1/2) = -1
    assert math.isclose(point["acc_corrected"], 0.0)
    lo, hi = point["pass_corrected_ci"]
    assert lo <= point["pass_corrected"] <= hi and point["n_questions"] == 2 and point["k"] == 4
    with pytest.raises(ValueError, match="no question"):
        summarize_support([], k=4)


def P(step, pass_c, ci=None, acc=0.0):
    """A watch point: corrected Pass@K (its interval defaults to +-0.05) and corrected Acc@1."""
    ci = ci if ci is not None else [pass_c - 0.05, pass_c + 0.05]
    return {"step": step, "k": 16, "pass_corrected": pass_c, "pass_corrected_ci": ci, "acc_corrected": acc,
            "acc_corrected_ci": [acc - 0.1, acc + 0.1], "pass_at_k": 0.0, "acc_at_1": 0.0}


BASE = P(0, 0.60, acc=0.20)


@pytest.mark.parametrize(
    "point, expected",
    [
        (P(10, 0.50, [0.40, 0.54]), True),  # whole interval below 0.60 - 0.05 = 0.55: collapsed
        (P(10, 0.50, [0.40, 0.55]), False),  # upper end exactly on the line: not (yet) confidently below
        (P(10, 0.45, [0.20, 0.70]), False),  # estimate far below but the interval is wide: noise, keep going
        (P(10, 0.70), False),  # support grew
    ],
)
def test_collapsed(point, expected):
    assert collapsed(point, BASE, 0.05) is expected


@pytest.mark.parametrize(
    "pass_c, expected",
    [(0.55, True), (0.549, False), (0.80, True)],  # the estimate, not the interval, must stay within tolerance
)
def test_within_tolerance(pass_c, expected):
    assert within_tolerance(P(5, pass_c), BASE, 0.05) is expected


@pytest.mark.parametrize(
    "history, ship, collapse_step, why",
    [
        # no collapse: ship the last step
        ([BASE, P(10, 0.62, acc=0.3), P(20, 0.58, acc=0.4)], 20, None, "support held"),
        # collapse at 30: the best before it by corrected Acc@1 among points within tolerance is step 20
        ([BASE, P(10, 0.61, acc=0.3), P(20, 0.57, acc=0.5), P(30, 0.2, [0.1, 0.3], acc=0.7)], 20, 30, "step 20"),
        # step 20 has the best Acc@1 but its support already fell outside the tolerance: step 10 ships
        ([BASE, P(10, 0.61, acc=0.3), P(20, 0.52, acc=0.6), P(30, 0.2, [0.1, 0.3], acc=0.7)], 10, 30, "step 10"),
        # collapse at the first watch point: nothing before it but the start -> the starting model ships
        ([BASE, P(10, 0.1, [0.0, 0.2], acc=0.9)], 0, 10, "the starting model"),
        # ties in Acc@1: higher Pass@K wins
        ([BASE, P(10, 0.59, acc=0.3), P(20, 0.62, acc=0.3), P(30, 0.1, [0.0, 0.2])], 20, 30, "step 20"),
        # ties in both: the earlier step wins
        ([BASE, P(10, 0.60, acc=0.3), P(20, 0.60, acc=0.3), P(30, 0.1, [0.0, 0.2])], 10, 30, "step 10"),
        # only the FIRST collapse counts, even if support recovers later
        ([BASE, P(10, 0.2, [0.1, 0.3]), P(20, 0.7, acc=0.9)], 0, 10, "collapsed at step 10"),
    ],
)
def test_guard_decision(history, ship, collapse_step, why):
    d = guard_decision(history, 0.05)
    assert d.ship_step == ship and d.collapse_step == collapse_step and d.collapsed is (collapse_step is not None)
    assert why in d.reason


def test_guard_decision_without_stopping_records_but_ships_last():
    history = [BASE, P(10, 0.2, [0.1, 0.3]), P(20, 0.3, [0.2, 0.4])]
    d = guard_decision(history, 0.05, stop_on_collapse=False)
    assert d.collapsed and d.collapse_step == 10 and d.ship_step == 20 and "stop_on_collapse is off" in d.reason


def test_best_before_always_has_the_start():
    assert best_before([BASE], 1, 0.05)["step"] == 0
