"""The one measurement harness: answer reading with the judge modes, truncation counted, open-ended answers scored by
exact match / token F1 or the judge, and settings validated (table-driven where it is a rule)."""

from __future__ import annotations

import pytest

from components.common.answers import exact_match, normalise_answer, read_open_answer, token_f1
from components.common.harness import HarnessConfig, read_answers, read_open_answers, support_summary
from components.common.records import MCQRecord, OpenRecord
from components.common.sampling import Completion

REC = MCQRecord(id="q", question="Which animal?", options=["cat", "dog", "cow", "pig"], answer="B", image=None, task="t")


class Judge:
    """Answers with fixed letters (or NONE) and records what it was asked."""

    def __init__(self, reply):
        self.reply, self.asked = reply, []

    def greedy(self, prompts):
        self.asked += prompts
        return [f"<answer>{self.reply}</answer>" for _ in prompts]


# (judge mode, judge reply, expected greedy letter, expected sample letters, completions sent to the judge)
JUDGE_CASES = [
    (None, None, "B", ["A", None], 0),  # the parser alone: an unreadable answer stays None
    ("unreadable", "B", "B", ["A", "B"], 1),  # only the unreadable sample is judged; parsed letters stand
    ("all", "C", "C", ["C", "C"], 3),  # every answer judged and the judge's letter decides (the paper)
    ("all", "NONE", None, [None, None], 3),  # the judge finds no committed option: nothing counts as correct
]


@pytest.mark.parametrize("mode, reply, greedy, samples, asked", JUDGE_CASES)
def test_judge_modes(mode, reply, greedy, samples, asked):
    judge = Judge(reply) if mode else None
    out, rows = read_answers([REC], [["<answer>A</answer>", "I think it barks"]], ["<answer>B</answer>"],
                             judge=judge, judge_mode=mode or "unreadable")
    o = out[0]
    assert o.greedy_letter == greedy and o.sample_letters == samples
    assert o.greedy_correct == (greedy == "B") and o.sample_correct == [s == "B" for s in samples]
    assert (len(judge.asked) if judge else 0) == asked == o.judged
    assert rows[0]["greedy"]["parsed"] == "B"  # what the parser read is kept beside what counted


def test_truncated_completions_are_counted_and_shown():
    cut = Completion("<think>a long chain of thought that never", truncated=True)
    out, rows = read_answers([REC], [[cut, Completion("<answer>B</answer>")]], [cut])
    o = out[0]
    assert o.greedy_truncated and o.sample_truncated == [True, False]
    assert rows[0]["greedy"]["truncated"] is True and rows[0]["samples"][1]["truncated"] is False
    m = support_summary(out, k=1, n_boot=100)
    assert m["truncation_rate"] == 0.5 and m["greedy_truncation_rate"] == 1.0
    assert m["format_failure_rate"] == 0.5  # the cut sample never closed its <answer> block: counted, not hidden


def test_backend_returning_too_few_answers_is_an_error():
    with pytest.raises(RuntimeError, match="1 sample lists and 0 greedy answers"):
        read_answers([REC], [["<answer>A</answer>"]], [])


# (prediction, reference, exact match, token F1): SQuAD-style normalisation
OPEN_CASES = [
    ("The left lobe.", "left lobe", True, 1.0),  # articles, case and punctuation ignored
    ("left lower lobe", "left lobe", False, 0.8),  # 2 shared tokens: P = 2/3, R = 1, F1 = 0.8
    ("", "left lobe", False, 0.0),  # an empty answer never matches
    ("liver", "spleen", False, 0.0),
]


@pytest.mark.parametrize("pred, ref, em, f1", OPEN_CASES)
def test_open_answer_scoring(pred, ref, em, f1):
    assert exact_match(pred, ref) is em and token_f1(pred, ref) == pytest.approx(f1)


def test_open_answers_read_from_the_answer_block_and_judged():
    assert read_open_answer("<think>x</think><answer>Answer: the liver</answer>").letter == "the liver"
    assert normalise_answer("The Liver!") == "liver"
    rec = OpenRecord(id="o", question="Which organ?", answer="liver", image=None, task="vqa-rad")
    out, _ = read_open_answers([rec], [["<answer>Liver</answer>", "<answer>kidney</answer>"]], ["<answer>liver.</answer>"])
    assert out[0].greedy_correct and out[0].sample_correct == [True, False] and out[0].n_options is None
    judge = Judge("NO")  # with a judge, its verdict decides every open answer
    out, _ = read_open_answers([rec], [["<answer>Liver</answer>"]], ["<answer>liver</answer>"], judge=judge)
    assert not out[0].greedy_correct and out[0].sample_correct == [False] and out[0].judged == 2


@pytest.mark.parametrize("kw, msg", [
    ({"judge_mode": "most"}, "judge_mode='most'"),
    ({"chance_ceiling": 0.0}, "chance_ceiling=0.0"),
    ({"k": 4, "n_samples": 2}, "n_samples=2 is below k=4"),
    ({"max_pixels": -1}, "max_pixels=-1"),
])
def test_harness_settings_are_validated(kw, msg):
    with pytest.raises(ValueError, match=msg.replace("(", r"\(")):
        HarnessConfig(**kw)


def test_harness_record_and_vllm_context_hold_the_paper_settings():
    h = HarnessConfig(max_new_tokens=2048, min_pixels=1280 * 28 * 28, max_pixels=16384 * 28 * 28,
                      judge_model="Qwen/Qwen2.5-VL-32B-Instruct", judge_mode="all")
    rec = h.record()
    assert rec["max_pixels"] == 12845056 and rec["judge_mode"] == "all" and "judge" in rec["answer_reading"]
    assert h.sampling().pixel_bounds() == {"shortest_edge": 1003520, "longest_edge": 12845056}
    assert h.sampling().max_model_len >= 16384 + 2048  # room for the largest image and the completion
