"""The diagnosis metrics block (hand-computed, raw and chance-corrected) and the decision and gate tables: a uniform
guesser at 2, 4 and 11 options, a perfect model, straddling intervals, few questions."""

from __future__ import annotations

import random

import pytest

from components.common.harness import QuestionOutcome
from components.diagnose.decision import decide, gate_after_bridge
from components.diagnose.metrics import summarise, summarise_by

LETTERS = "ABCDEFGHIJK"


def outcome(i, n_options, greedy_ok, sample_ok, group="radiology", task="t") -> QuestionOutcome:
    return QuestionOutcome(
        id=str(i), task=task, group=group, answer="A", n_options=n_options,
        greedy_letter="A" if greedy_ok else "B", greedy_correct=greedy_ok,
        sample_letters=["A" if ok else "B" for ok in sample_ok], sample_correct=list(sample_ok),
        sample_format_ok=[True] * len(sample_ok), sample_truncated=[False] * len(sample_ok),
    )


def guesser(n_q: int, n_options: int, n: int = 16, seed: int = 0, group="radiology", task="t") -> list[QuestionOutcome]:
    """A uniform guesser: every answer (greedy and each sample) a random option; the right one is A."""
    rng = random.Random(f"{seed}-{n_options}-{group}")
    return [
        outcome(i, n_options, rng.randrange(n_options) == 0, [rng.randrange(n_options) == 0 for _ in range(n)],
                group, task)
        for i in range(n_q)
    ]


def always_right(n_q: int, n_options: int, n: int = 16, group="radiology", task="t") -> list[QuestionOutcome]:
    return [outcome(i, n_options, True, [True] * n, group, task) for i in range(n_q)]


def test_summarise_hand_computed_raw_chance_and_corrected():
    # 4 questions with 4 options, n = 4 samples: questions 0 and 2 have 2/4 correct, 1 and 3 none; greedy right on 0, 1
    rs = [outcome(i, 4, i < 2, [j < (2 if i % 2 == 0 else 0) for j in range(4)]) for i in range(4)]
    m = summarise(rs, k=2, n_boot=200)
    # raw: pass@1 = mean(2/4, 0, 2/4, 0) = 0.25; pass@2 = mean(1 - C(2,2)/C(4,2) = 5/6, 0, 5/6, 0) = 5/12
    assert m["pass_at_k"]["1"] == pytest.approx(0.25) and m["pass_at_k"]["2"] == pytest.approx(5 / 12)
    assert m["acc_at_1"] == 0.5 and m["gap"] == pytest.approx(5 / 12 - 0.5)
    # a guesser among 4: Acc@1 1/4, pass@2 = 1 - (3/4)^2 = 0.4375
    assert m["chance"]["acc_at_1"] == pytest.approx(0.25)
    assert m["chance"]["pass_at_k"] == pytest.approx({"1": 0.25, "2": 0.4375})
    # corrected at k = 2 (the largest k with chance <= 0.5 for 4 options): (5/6 - 0.4375) / 0.5625 twice, -0.4375/0.5625 twice
    c = m["corrected"]
    assert c["k_used"] == {"4": 2} and c["chance_at_k_used"]["4"] == pytest.approx(0.4375)
    assert c["pass_at_k"] == pytest.approx(((5 / 6 - 0.4375) / 0.5625 - 0.4375 / 0.5625) / 2)
    # Acc@1 corrected with chance 1/4: right -> 1, wrong -> -1/3
    assert c["acc_at_1"] == pytest.approx((1 + 1 - 1 / 3 - 1 / 3) / 4)
    lo, hi = c["ci"]["pass_at_k"]
    assert lo <= c["pass_at_k"] <= hi
    assert m["options"] == {"4": 4} and m["truncation_rate"] == 0.0 and m["format_failure_rate"] == 0.0


def test_mixed_option_counts_correct_each_question_from_its_own_count():
    # a yes/no question answered right every time and an 11-option one never: each corrected from its own C
    rs = [outcome(0, 2, True, [True] * 16), outcome(1, 11, False, [False] * 16)]
    c = summarise(rs, k=16, n_boot=200)["corrected"]
    assert c["k_used"] == {"2": 1, "11": 7}  # yes/no decides on k = 1, 11 options on k = 7
    chance7 = 1 - (10 / 11) ** 7
    assert c["pass_at_k"] == pytest.approx((1.0 + (0 - chance7) / (1 - chance7)) / 2)


@pytest.mark.parametrize("bad, msg", [
    (None, "no option count"),  # an open question reached the chance correction
    (1, "no option count"),  # one option is not a question
])
def test_summarise_refuses_a_question_without_option_count(bad, msg):
    rs = [outcome(0, 4, True, [True] * 4)]
    rs[0].n_options = bad
    with pytest.raises(ValueError, match=msg):
        summarise(rs, k=2)


def test_summarise_rejects_too_few_samples():
    with pytest.raises(ValueError, match="n >= k"):
        summarise(guesser(2, 4, n=4), k=8)


def M(p: float, lo: float, hi: float, acc: float = 0.2, k: int = 16, n: int = 100, raw: float = 0.99) -> dict:
    """A metrics block whose corrected Pass@K is p with interval [lo, hi]."""
    return {"n": n, "acc_at_1": acc, "pass_at_k": {"1": acc, str(k): raw}, "gap": raw - acc,
            "chance": {"acc_at_1": 0.25, "pass_at_k": {"1": 0.25, str(k): 0.99}},
            "corrected": {"acc_at_1": 0.0, "pass_at_k": p, "gap": 0.0,
                          "ci": {"acc_at_1": [0, 0], "pass_at_k": [lo, hi], "gap": [0, 0]}, "k_used": {"4": 2}},
            "ci": {"acc_at_1": [acc, acc], "pass_at_k": [raw, raw], "gap": [0, 0]}}


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
        (M(0.10, 0.0, 0.2, raw=0.99), "auto", "bridge", "bridge", False, False),  # raw Pass@16 0.99 is chance: bridge
    ],
)
def test_decide_table(overall, force, ambiguous, branch, forced, is_amb):
    d = decide(overall, {}, tau=0.5, force=force, ambiguous=ambiguous)
    assert (d.branch, d.forced, d.ambiguous) == (branch, forced, is_amb)
    # the numbers that chose the branch are recorded: corrected with its k, raw beside chance, tau
    assert "corrected Pass@K = " in d.rule and "k = 2 for 4 options" in d.rule and "raw Pass@16 = 0.990" in d.rule
    assert "tau = 0.50" in d.rule
    if forced:
        assert "FORCED" in d.rule and d.measured_branch != d.branch


@pytest.mark.parametrize("n_options", [2, 4, 11])
def test_uniform_guesser_routes_to_bridge_overall_and_in_every_modality(n_options):
    # 60 questions per group: raw Pass@16 of a guesser is 0.78-1.0, which the raw rule read as support; corrected ~ 0
    groups = ("radiology", "microscopy", "visible light")
    rs = [o for g in groups for o in guesser(60, n_options, group=g, task=f"task-{g}")]
    overall = summarise(rs, 16, n_boot=500)
    assert overall["pass_at_k"]["16"] > 0.7  # the raw number a guesser reaches (0.99998 / 0.99 / 0.78 expected)
    per_mod = summarise_by(rs, "group", 16, n_boot=500)
    per_task = summarise_by(rs, "task", 16, n_boot=500)
    d = decide(overall, per_mod, tau=0.5, per_task=per_task)
    assert d.branch == "bridge" and not d.ambiguous
    assert {g: v["branch"] for g, v in d.per_modality.items()} == dict.fromkeys(groups, "bridge")
    assert set(d.weak_modalities) == set(groups) and set(d.weak_tasks) == set(per_task)
    assert abs(overall["corrected"]["pass_at_k"]) < 0.15  # guessing corrects to about 0


@pytest.mark.parametrize("n_options", [2, 4, 11])
def test_always_right_model_routes_to_sharpen(n_options):
    rs = always_right(30, n_options)
    m = summarise(rs, 16, n_boot=200)
    assert m["corrected"]["pass_at_k"] == pytest.approx(1.0) and m["corrected"]["ci"]["pass_at_k"] == pytest.approx([1, 1])
    d = decide(m, summarise_by(rs, "group", 16, n_boot=200), tau=0.5, per_task=summarise_by(rs, "task", 16, n_boot=200))
    assert d.branch == "sharpen" and d.weak_tasks == [] and d.weak_modalities == []


def test_few_questions_straddle_and_take_the_conservative_branch():
    # three 4-option questions, one always right and two guessed: the interval is wide and straddles tau
    rs = always_right(1, 4) + guesser(2, 4, seed=3)
    m = summarise(rs, 16, n_boot=500)
    lo, hi = m["corrected"]["ci"]["pass_at_k"]
    assert lo < 0.5 <= hi
    d = decide(m, {}, tau=0.5)
    assert d.ambiguous and d.branch == "bridge" and "straddles" in d.rule


def test_decide_per_modality_and_weak_lists():
    per_mod = {"CT": M(0.2, 0.1, 0.3), "MRI": M(0.9, 0.8, 0.95), "X-ray": M(0.5, 0.3, 0.7)}
    per_task = {"organamnist": M(0.2, 0.1, 0.3), "pathmnist": M(0.9, 0.8, 0.95)}
    d = decide(M(0.55, 0.52, 0.58), per_mod, tau=0.5, per_task=per_task, decided_on="rl_diag_set")
    assert d.branch == "sharpen"  # overall corrected support confidently above tau
    assert {g: v["branch"] for g, v in d.per_modality.items()} == {"CT": "bridge", "MRI": "sharpen", "X-ray": "bridge"}
    assert d.per_modality["X-ray"]["ambiguous"] is True  # straddles: ambiguous policy bridge
    assert d.weak_modalities == ["CT", "X-ray"] and d.weak_tasks == ["organamnist"]
    assert d.decided_on == "rl_diag_set" and "decided on rl_diag_set" in d.rule


@pytest.mark.parametrize("kw, msg", [({"tau": 1.5}, "tau=1.5"), ({"force": "rl"}, "force='rl'"),
                                     ({"ambiguous": "auto"}, "ambiguous='auto'")])
def test_decide_rejects_bad_knobs(kw, msg):
    with pytest.raises(ValueError, match=msg):
        decide(M(0.5, 0.4, 0.6), {}, **kw)


def test_decide_refuses_a_block_without_corrected_numbers():
    old = M(0.5, 0.4, 0.6)
    del old["corrected"]
    with pytest.raises(ValueError, match="predates the chance correction"):
        decide(old, {})


@pytest.mark.parametrize(
    "m, force_rl, ambiguous, outcome, forced, is_amb",
    [
        (M(0.30, 0.20, 0.40), False, "bridge", "stop", False, False),  # still below tau after SFT: no GRPO
        (M(0.70, 0.60, 0.80), False, "bridge", "proceed", False, False),  # the bridge worked: sharpen
        (M(0.52, 0.45, 0.60), False, "bridge", "stop", False, True),  # straddles, conservative policy: stop
        (M(0.52, 0.45, 0.60), False, "sharpen", "proceed", False, True),  # straddles, operator policy sharpen
        (M(0.30, 0.20, 0.40), True, "bridge", "proceed", True, False),  # operator forces GRPO: recorded as forced
        (M(0.70, 0.60, 0.80), True, "bridge", "proceed", False, False),  # force not needed: not recorded as forced
    ],
)
def test_gate_after_bridge_table(m, force_rl, ambiguous, outcome, forced, is_amb):
    g = gate_after_bridge(m, tau=0.5, force_rl=force_rl, ambiguous=ambiguous)
    assert (g.outcome, g.forced, g.ambiguous) == (outcome, forced, is_amb)
    assert "corrected Pass@K = " in g.rule and g.rule.startswith(outcome)
    if forced:
        assert "FORCED" in g.rule and g.measured_outcome == "stop"


def test_gate_on_a_guesser_after_the_bridge_stops():
    m = summarise(guesser(80, 4), 16, n_boot=300)
    assert gate_after_bridge(m, tau=0.5).outcome == "stop"
