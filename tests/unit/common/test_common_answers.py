"""Answer parser, LLM-judge plumbing and vLLM request building (no vLLM needed)."""

from __future__ import annotations

import sys

import pytest

from components.common.answers import JudgeItem, judge_answers, judge_messages, parse_answer, read_judge_reply
from components.common.sampling import Prompt, SamplingConfig, build_vllm_requests, vllm_engine_kwargs, vllm_sampling_kwargs

OPTS = ["cat", "dog", "B cells"]


@pytest.mark.parametrize(
    "completion, letter, format_ok",
    [
        ("<think>x</think><answer>B</answer>", "B", True),  # the canonical form
        ("<answer> b </answer>", "B", True),  # lower case and spaces
        ("<answer>(B)</answer>", "B", True),  # parenthesised letter
        ("<answer>B.</answer>", "B", True),  # letter with a period
        ("<answer>B) dog</answer>", "B", True),  # letter followed by its own option text
        ("<answer>(A) cat</answer>", "A", True),  # parenthesised letter + its text
        ("<answer>[C]</answer>", "C", True),  # bracketed letter
        ("<answer>**A**</answer>", "A", True),  # markdown bold
        ("<answer>Answer: A</answer>", "A", True),  # 'Answer:' prefix inside the tags
        ("<answer>The answer is C</answer>", "C", True),  # sentence form
        ("<answer>dog</answer>", "B", True),  # the option text instead of the letter
        ("<answer>  Dog. </answer>", "B", True),  # option text, case, spacing and period ignored
        ("<answer>B cells</answer>", "C", True),  # option text starting with a letter is read as text, not 'B'
        ("<answer>B. cat</answer>", None, True),  # letter contradicts the text: unreadable, not guessed
        ("<answer>dog or cat</answer>", None, True),  # two options: unreadable
        ("<answer>D</answer>", None, True),  # a letter beyond the options
        ("<answer></answer>", None, True),  # empty tags
        ("<answer>A</answer> then <answer>B</answer>", "B", True),  # the last answer block counts
        ("The answer is B", None, False),  # no tags: format failure
        ("<answer>B", None, False),  # unclosed tag: format failure
        ("", None, False),  # empty completion
    ],
)
def test_parse_answer_table(completion, letter, format_ok):
    p = parse_answer(completion, OPTS)
    assert (p.letter, p.format_ok) == (letter, format_ok)


@pytest.mark.parametrize(
    "reply, letter",
    [
        ("<answer>A</answer>", "A"),  # tagged letter
        ("B", "B"),  # bare letter without tags
        ("<answer>NONE</answer>", None),  # judge says the response commits to nothing
        ("<answer>Z</answer>", None),  # invalid letter
    ],
)
def test_read_judge_reply(reply, letter):
    assert read_judge_reply(reply, OPTS) == letter


class _ScriptedJudge:
    """A backend whose greedy replies are scripted; records the prompts it saw."""

    def __init__(self, replies):
        self.replies, self.seen = replies, []

    def greedy(self, prompts):
        self.seen += prompts
        return self.replies[: len(prompts)]


def test_judge_answers_uses_backend_greedy_with_constrained_prompt():
    judge = _ScriptedJudge(["<answer>B</answer>", "<answer>NONE</answer>"])
    items = [JudgeItem("Which animal?", OPTS, "I think it barks"), JudgeItem("Which animal?", OPTS, "unsure")]
    assert judge_answers(judge, items) == ["B", None]
    text = judge.seen[0].messages[0]["content"][0]["text"]
    assert "A. cat" in text and "I think it barks" in text and "NONE" in text
    assert judge.seen[0].image is None  # text-only judge prompt
    assert judge_answers(judge, []) == []
    assert judge_messages(items[0])[0]["role"] == "user"


def test_vllm_requests_built_without_vllm():
    assert "vllm" not in sys.modules
    img = object()
    prompts = [Prompt([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q1"}]}], img),
               Prompt([{"role": "user", "content": [{"type": "text", "text": "q2"}]}])]

    def template(messages):
        parts = ["<|vision_start|><|image_pad|><|vision_end|>" if c["type"] == "image" else c["text"]
                 for c in messages[0]["content"]]
        return "<|im_start|>user\n" + "".join(parts) + "<|im_end|>\n<|im_start|>assistant\n"

    reqs = build_vllm_requests(prompts, template)
    assert reqs[0]["multi_modal_data"] == {"image": img} and "<|image_pad|>" in reqs[0]["prompt"]
    assert reqs[1] == {"prompt": template(prompts[1].messages)}  # text-only: no multi_modal_data
    with pytest.raises(ValueError, match="prompt 0: has an image"):
        build_vllm_requests(prompts[:1], lambda m: "no placeholder")
    cfg = SamplingConfig(backend="vllm", temperature=0.7, top_p=0.9, max_new_tokens=64, seed=3, tensor_parallel_size=2)
    assert vllm_sampling_kwargs(cfg, 16) == {"n": 16, "temperature": 0.7, "top_p": 0.9, "max_tokens": 64, "seed": 3}
    assert vllm_sampling_kwargs(cfg, 16, greedy=True)["temperature"] == 0.0
    eng = vllm_engine_kwargs(cfg, "/m")
    assert eng["enable_prefix_caching"] and eng["tensor_parallel_size"] == 2 and eng["limit_mm_per_prompt"] == {"image": 1}
    assert "vllm" not in sys.modules  # nothing above imported vLLM
