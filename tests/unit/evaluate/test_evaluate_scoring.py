"""Scoring: unbiased pass@k, option-letter scorer on hand-written completions, aggregates and paired deltas."""

from __future__ import annotations

import pytest

from components.common.records import MCQRecord
from components.evaluate.scoring import aggregate, paired_delta, pass_at_k, score_question, stage_deltas

# (n, c, k, expected): 1 - C(n-c, k) / C(n, k), worked by hand.
PASS_CASES = [
    (16, 0, 16, 0.0),  # no correct sample: never passes
    (16, 16, 1, 1.0),  # all correct: always passes
    (4, 1, 1, 0.25),  # k=1 is the fraction correct
    (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    (5, 2, 3, 0.9),  # 1 - C(3,3)/C(5,3) = 1 - 1/10
    (8, 7, 2, 1.0),  # n - c < k: some correct sample is always drawn
]


@pytest.mark.parametrize("n,c,k,expected", PASS_CASES)
def test_pass_at_k(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


@pytest.mark.parametrize("n,c,k", [(4, 5, 1), (4, 1, 5), (4, 1, 0)])  # c > n; k > n; k = 0
def test_pass_at_k_rejects_bad_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def _rec(i, answer="B", options=("cat", "dog", "cow")):
    return MCQRecord(id=f"q{i}", question="Which animal?", options=list(options), answer=answer, image=None, task="t")


def test_scorer_on_hand_written_completions_matches_hand_computed_accuracy():
    recs = [_rec(0), _rec(1), _rec(2), _rec(3)]
    greedy = [
        "<think>fur</think><answer>B</answer>",  # right letter
        "<answer> dog </answer>",  # right option text
        "<answer>C</answer>",  # wrong letter
        "The answer is B",  # no <answer> tag: format failure, wrong
    ]
    samples = [
        ["<answer>B</answer>", "<answer>A</answer>"],  # 1 of 2 right
        ["<answer>(b)</answer>", "<answer>B.</answer>"],  # 2 of 2 right
        ["<answer>A</answer>", "nothing"],  # 0 of 2 right, one format failure
        ["<answer>b</answer>", "<answer>Z</answer>"],  # 1 right; Z is no option (read as None, format ok)
    ]
    outs = [score_question(r, g, s) for r, g, s in zip(recs, greedy, samples)]
    assert [o.greedy_correct for o in outs] == [True, True, False, False]
    assert [o.n_correct for o in outs] == [1, 2, 0, 1]
    assert outs[3].sample_letters == ["B", None]
    m = aggregate(outs, k=2, n_boot=200)
    assert m["n"] == 4
    assert m["acc_at_1"] == pytest.approx(2 / 4)
    # pass@1 = mean(c/n) = (0.5 + 1 + 0 + 0.5) / 4; pass@2 = mean(1, 1, 0, 1)
    assert m["pass_at_k"] == pytest.approx({"1": 0.5, "2": 0.75})
    assert m["gap"] == pytest.approx(0.25)
    assert m["format_failure_rate"] == pytest.approx(1 / 8)  # one sample of #3, of 8 sampled completions
    assert m["greedy_format_failure_rate"] == pytest.approx(1 / 4)  # greedy #4
    # 3 options: a guesser's pass@2 is 1 - (2/3)^2 = 5/9, and 3 options correct at k = 1 (chance 1/3)
    assert m["chance"]["pass_at_k"]["2"] == pytest.approx(5 / 9) and m["corrected"]["k_used"] == {"3": 1}
    assert m["corrected"]["pass_at_k"] == pytest.approx((0.5 - 1 / 3) / (2 / 3))
    assert m["mean_distinct_answers"] == pytest.approx((2 + 1 + 1 + 1) / 4)
    lo, hi = m["ci"]["acc_at_1"]
    assert 0 <= lo <= 0.5 <= hi <= 1


def test_paired_delta_is_trained_minus_base_on_the_same_questions():
    recs = [_rec(i) for i in range(4)]
    base = [score_question(r, "<answer>A</answer>", ["<answer>A</answer>", "<answer>B</answer>"]) for r in recs]
    trained = [
        score_question(r, "<answer>B</answer>" if i < 3 else "<answer>A</answer>", ["<answer>B</answer>"] * 2)
        for i, r in enumerate(recs)
    ]
    d = paired_delta(base, trained, k=2, n_boot=200)
    assert d["acc_at_1"]["value"] == pytest.approx(3 / 4)  # base 0/4, trained 3/4
    assert d["pass_at_k"]["value"] == pytest.approx(0.0)  # both pass@2 = 1 everywhere
    assert d["pass_at_k"]["ci"] == pytest.approx([0.0, 0.0])
    # p of "a loss beyond the margin": never for a gain, always smallest for a sure loss
    assert d["acc_at_1"]["p_loss"] == pytest.approx(1.0)
    assert paired_delta(trained, base, k=2, n_boot=200)["acc_at_1"]["p_loss"] < 0.05
    with pytest.raises(ValueError, match="different questions"):
        paired_delta(base[:3], trained, k=2)



def _stage(letters: str) -> list:
    """Outcomes of 4 questions (answer B) whose greedy and both samples are the given letter per question."""
    return [score_question(_rec(i), f"<answer>{x}</answer>", [f"<answer>{x}</answer>"] * 2) for i, x in enumerate(letters)]


# (base, SFT, final letters per question, expected Acc@1 deltas base->SFT, SFT->RL, base->final)
STAGE_CASES = [
    ("AAAA", "BBBB", "BBBB", (1.0, 0.0, 1.0)),  # the bridge did it all; RL added nothing on top
    ("AAAA", "AAAA", "BBBB", (0.0, 1.0, 1.0)),  # RL did it all on top of a bridge that did nothing
    ("AAAA", "BBAA", "BBBA", (0.5, 0.25, 0.75)),  # both contributed; the parts add up to the whole
    ("BBBB", "BBBB", "AAAA", (0.0, -1.0, -1.0)),  # RL lost what the base and the bridge had
]


@pytest.mark.parametrize("base, sft, final, expected", STAGE_CASES)
def test_stage_deltas_keep_sft_and_rl_gains_apart(base, sft, final, expected):
    d = stage_deltas({"base": _stage(base), "sft": _stage(sft), "trained": _stage(final)}, k=2, n_boot=200)
    got = tuple(d[name]["acc_at_1"]["value"] for name in ("base_to_sft", "sft_to_rl", "base_to_final"))
    assert got == pytest.approx(expected)


def test_stage_deltas_without_a_bridge_and_on_different_questions():
    d = stage_deltas({"base": _stage("AAAA"), "trained": _stage("BBBB")}, k=2, n_boot=100)
    assert set(d) == {"base_to_final"}  # the sharpen branch: one delta
    with pytest.raises(ValueError, match="different questions"):
        stage_deltas({"base": _stage("AAAA"), "sft": _stage("AAA"), "trained": _stage("AAAA")}, k=2)
