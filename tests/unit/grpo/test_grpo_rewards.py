"""Pure functions of the sharpen step: rewards (the format reward follows the prompt format), GRPO-CARE bonus, EMA
arithmetic. The guard's rules are in test_grpo_guard.py."""

from __future__ import annotations

import math

import pytest

from components.grpo.rewards import (
    accuracy_reward,
    answer_token_mask,
    consistency_bonus,
    ema_alpha,
    ema_update,
    format_reward,
    make_format_reward,
    mean_probability,
)

OPTS = ["normal", "pneumonia", "effusion", "mass"]


def conv(text):
    return [{"role": "assistant", "content": text}]


@pytest.mark.parametrize(
    "text, answer, expected",
    [
        ("<think>x</think><answer>B</answer>", "B", 1.0),  # the right letter in the answer block
        ("<think>x</think><answer>C</answer>", "B", 0.0),  # a wrong letter
        ("<answer> b </answer>", "B", 1.0),  # case and spaces do not matter (parse_answer)
        ("<answer>pneumonia</answer>", "B", 1.0),  # the option text counts as its letter
        ("B", "B", 0.0),  # no <answer> block: format failure, never correct
        ("<answer>A</answer> <answer>B</answer>", "B", 1.0),  # the LAST answer block counts
        ("<answer>Z</answer>", "B", 0.0),  # a letter outside the options
        ("", "A", 0.0),  # empty completion
    ],
)
def test_accuracy_reward(text, answer, expected):
    assert accuracy_reward([conv(text)], answer=[answer], options=[OPTS]) == [expected]


def test_accuracy_reward_plain_strings_and_batch():
    # Standard (non-conversational) completions and several rows at once, as TRL passes them.
    out = accuracy_reward(["<answer>A</answer>", "<answer>D</answer>"], answer=["A", "C"], options=[OPTS, OPTS])
    assert out == [1.0, 0.0]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>because</think><answer>B</answer>", 1.0),  # the canonical format
        ("  <think>a\nb</think>\n<answer>B</answer>\n", 1.0),  # whitespace and newlines around the tags are fine
        ("<answer>B</answer>", 0.0),  # reasoning missing
        ("<answer>B</answer><think>late</think>", 0.0),  # wrong order
        ("<think>a</think>", 0.0),  # answer missing
        ("<think>a</think><answer>B</answer> trailing", 0.0),  # text after the answer
        ("<think>a</think><think>b</think><answer>B</answer>", 0.0),  # repeated think block
        ("<think>a</think><answer>A</answer><answer>B</answer>", 0.0),  # two answers
    ],
)
def test_format_reward(text, expected):
    assert format_reward([conv(text)]) == [expected]


@pytest.mark.parametrize(
    "acc, conf, expected",
    [
        # All correct, equal confidence: everyone is at the mean -> everyone gets the 0.5 bonus.
        ([1, 1, 1, 1], [0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]),
        # Mean confidence of the correct ones is 0.5; 0.3 is below 0.5 - 0.01 -> no bonus for it.
        ([1, 1, 0, 0], [0.7, 0.3, 0.9, 0.9], [0.5, 0.0, 0.0, 0.0]),
        # Wrong completions never get a bonus however confident the reference is.
        ([0, 0, 0, 0], [0.9, 0.9, 0.9, 0.9], [0.0, 0.0, 0.0, 0.0]),
        # Upper bound: 0.99 and 0.96 are both clipped to 0.95, so they tie and both get the bonus.
        ([1, 1], [0.99, 0.96], [0.5, 0.5]),
        # Margin: mean of (0.50, 0.48) = 0.49; 0.48 >= 0.49 - 0.01 -> bonus despite being below the mean.
        ([1, 1], [0.50, 0.48], [0.5, 0.5]),
        # Just outside the margin: mean of (0.60, 0.40) = 0.50; 0.40 < 0.49 -> no bonus.
        ([1, 1], [0.60, 0.40], [0.5, 0.0]),
    ],
)
def test_consistency_bonus(acc, conf, expected):
    out = consistency_bonus(acc, conf, bonus=0.5, upper_bound=0.95, margin=0.01)
    assert out == pytest.approx(expected)


def test_consistency_bonus_scales_with_bonus_and_rejects_mismatch():
    assert consistency_bonus([1.0, 0.0], [0.5, 0.5], bonus=0.2) == pytest.approx([0.2, 0.0])
    with pytest.raises(ValueError, match="2 accuracies but 1 confidences"):
        consistency_bonus([1, 0], [0.5])


@pytest.mark.parametrize(
    "ema, online, decay, expected",
    [
        (1.0, 0.0, 0.995, 0.995),  # the paper's decay: the reference moves 0.5% of the way
        (0.0, 2.0, 0.5, 1.0),  # halfway
        (3.0, 3.0, 0.9, 3.0),  # equal weights stay put
        (1.0, 5.0, 0.0, 5.0),  # decay 0 copies the policy
    ],
)
def test_ema_update(ema, online, decay, expected):
    assert ema_update(ema, online, decay) == pytest.approx(expected)


def test_trl_sync_matches_ema_update():
    # The trainer moves the reference with TRL's SyncRefModelCallback using alpha = 1 - decay: same arithmetic.
    import torch
    from trl.trainer.callbacks import SyncRefModelCallback

    policy, ref = torch.nn.Linear(2, 1, bias=False), torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        policy.weight.copy_(torch.tensor([[2.0, -1.0]]))
        ref.weight.copy_(torch.tensor([[0.0, 1.0]]))
    SyncRefModelCallback._sync_target_model(policy, ref, ema_alpha(0.995))
    expected = [ema_update(0.0, 2.0, 0.995), ema_update(1.0, -1.0, 0.995)]
    assert ref.weight.flatten().tolist() == pytest.approx(expected)
    with pytest.raises(ValueError):
        ema_alpha(1.0)


@pytest.mark.parametrize(
    "pieces, expected",
    [
        (["<think>", "x", "</think>", "<answer>", "B", "</answer>"], [0, 0, 0, 0, 1, 0]),  # single-token tags
        (["<", "answer", ">", "B", "</", "answer", ">"], [0, 0, 0, 1, 0, 0, 0]),  # tags split into pieces
        (["<answer", ">B", "</answer>"], [0, 1, 0]),  # a piece straddling tag and letter is kept
        (["<answer>", "A", "</answer>", "<answer>", "C", "</answer>"], [0, 0, 0, 0, 1, 0]),  # the last block
        (["no", " answer"], [0, 0]),  # no answer block: nothing to score
        (["<answer>", "</answer>"], [0, 0]),  # empty answer: nothing to score
    ],
)
def test_answer_token_mask(pieces, expected):
    assert answer_token_mask(pieces) == [bool(e) for e in expected]


def test_mean_probability():
    assert mean_probability([math.log(0.5), math.log(0.5)]) == pytest.approx(0.5)  # geometric mean of 0.5, 0.5
    assert mean_probability([math.log(0.25), 0.0]) == pytest.approx(0.5)  # sqrt(0.25 * 1)
    assert mean_probability([]) == 0.0  # no answer tokens


@pytest.mark.parametrize(
    "fmt, text, expected",
    [
        ("direct", "<answer>B</answer>", 1.0),  # the direct format: the answer block alone
        ("direct", " <answer> B </answer>\n", 1.0),  # whitespace around it is fine
        ("direct", "<think>x</think><answer>B</answer>", 0.0),  # reasoning the direct prompt did not ask for
        ("direct", "B", 0.0),  # no answer block
        ("direct", "<answer>A</answer><answer>B</answer>", 0.0),  # two answers
        ("direct", "<answer>B</answer> because", 0.0),  # text after the answer
        ("think", "<answer>B</answer>", 0.0),  # think asks for reasoning first
        ("think", "<think>x</think><answer>B</answer>", 1.0),
        ("scaffold", "<think>1) CT 2) good ...</think><answer>B</answer>", 1.0),  # scaffold: same shape as think
    ],
)
def test_format_reward_follows_the_prompt_format(fmt, text, expected):
    reward = make_format_reward(fmt)
    assert reward.__name__ == "format_reward"  # what TRL logs it as
    assert reward([conv(text)]) == [expected]


def test_make_format_reward_rejects_unknown_format():
    with pytest.raises(ValueError, match="prompt_format='cot'"):
        make_format_reward("cot")
