"""Contamination filter (table-driven) and the held-out diagnosis slice: what is removed from training and why."""

from __future__ import annotations

import pytest

from components.common.records import MCQRecord
from components.curate.balance import hold_out_by_modality
from components.curate.contamination import Item, contaminated, counts, eval_keys, question_key


def I(id, image, question):  # noqa: E743
    return Item(id, image, question_key(question))


EVAL = {
    "benchmark pmc-vqa": [I("b1", "img-1", "What does the arrow in panel B point to?"),
                          I("b2", "img-2", "Which stain was used for figure 3?")],
    "eval_set": [I("e1", "img-3", "Which organ is shown?"), I("e2", "img-4", "Which organ is shown?")],
}

# (training item, expected reason or None): why each is or is not removed
CASES = [
    (I("t1", "img-1", "Something else entirely?"), "image"),  # the same picture as a benchmark question
    (I("t2", "img-9", "what does the ARROW in panel b point to"), "question"),  # same item text, case/punct ignored
    (I("t3", "img-2", "Which stain was used for figure 3?"), "image+question"),  # a verbatim copy
    (I("t4", "img-8", "Which organ is shown?"), None),  # a template (asked of 2 eval images) names a task, not an item
    (I("t5", "img-3", "Which organ is shown?"), "image"),  # ...but the same image is still caught
    (I("t6", None, "A text-only question?"), None),  # nothing to match
    (I("t7", "img-7", "Unrelated question?"), None),  # clean
]


@pytest.mark.parametrize("item, reason", CASES, ids=[c[0].id for c in CASES])
def test_contaminated(item, reason):
    keys = eval_keys(EVAL, [c[0] for c in CASES])
    hit = contaminated([item], keys).get(item.id)
    assert (hit.reason if hit else None) == reason
    if hit:
        assert set(hit.sources) <= set(EVAL)


def test_a_template_in_the_training_pool_is_no_key_either():
    # the benchmark asks this text once, but the training pool asks it of many images: a generic question
    eval_sets = {"benchmark x": [I("b", "img-1", "What is the modality of this image?")]}
    pool = [I(f"t{i}", f"img-p{i}", "What is the modality of this image?") for i in range(3)]
    keys = eval_keys(eval_sets, pool)
    assert question_key("What is the modality of this image?") in keys.templates
    assert contaminated(pool, keys) == {}


def test_counts_by_reason_and_source():
    keys = eval_keys(EVAL, [c[0] for c in CASES])
    hits = contaminated([c[0] for c in CASES], keys)
    c = counts(hits, checked=len(CASES))
    assert c["checked"] == 7 and c["removed"] == 4
    assert c["by_reason"] == {"image": 2, "image+question": 1, "question": 1}
    assert c["by_source"] == {"benchmark pmc-vqa": 3, "eval_set": 1}


def _rec(i, modality):
    return MCQRecord(id=f"q{i:03d}", question=f"q{i}?", options=["a", "b", "c", "d"], answer="A", image=None,
                     task="pmc-vqa", modality=modality)


def test_hold_out_slice_is_balanced_seeded_and_order_free():
    recs = [_rec(i, m) for i, m in enumerate(["CT"] * 5 + ["MRI"] * 1 + ["none"] * 4 + ["OCT"] * 3)]
    a = hold_out_by_modality(recs, 2, seed=0)
    b = hold_out_by_modality(list(reversed(recs)), 2, seed=0)
    assert [r.id for r in a] == [r.id for r in b]  # the draw does not depend on the input order
    by = {}
    for r in a:
        by[r.modality] = by.get(r.modality, 0) + 1
    assert by == {"CT": 2, "MRI": 1, "OCT": 2}  # 'none' left out, as in the balanced set; MRI gives what it has
    assert {r.modality for r in hold_out_by_modality(recs, 2, include_none=True)} == {"CT", "MRI", "OCT", "none"}
    with pytest.raises(ValueError, match="per_modality=0"):
        hold_out_by_modality(recs, 0)
