"""Modality balancing: quotas, shortfall redistribution, 'none' handling, determinism, table and chart."""

from __future__ import annotations

import pytest

from components.common.records import MCQRecord
from components.curate.balance import balance_by_modality, counts_chart, counts_table_md, plan_quotas

SEVEN = ("MRI", "CT", "ultrasound", "X-ray", "microscopy", "dermatology", "OCT")

CASES = [
    # plenty everywhere: 70 over 7 modalities = 10 each, 'none' gets nothing when excluded
    ({m: 50 for m in (*SEVEN, "none")}, 70, False, {m: 10 for m in SEVEN}, {}),
    # uneven split: 72 = 7*10 + 2, the first two modalities in MODALITIES order get the extra question
    ({m: 50 for m in SEVEN}, 72, False, {**{m: 10 for m in SEVEN}, "MRI": 11, "CT": 11}, {}),
    # MRI has 4 of its 10: the 6 missing go one each to the six others (11 each); shortfall reported for MRI
    ({**{m: 50 for m in SEVEN}, "MRI": 4}, 70, False, {**{m: 11 for m in SEVEN}, "MRI": 4}, {"MRI": 6}),
    # second round of water-filling: CT runs out while taking the redistributed share (quota 10, has 11)
    ({**{m: 50 for m in SEVEN}, "MRI": 0, "CT": 11}, 70, False,
     {"MRI": 0, "CT": 11, "ultrasound": 12, "X-ray": 12, "microscopy": 12, "dermatology": 12, "OCT": 11}, {"MRI": 10}),
    # 'none' included: 8 quotas of 10
    ({m: 50 for m in (*SEVEN, "none")}, 80, True, {m: 10 for m in (*SEVEN, "none")}, {}),
    # fewer questions than the target in total: everything is taken, the plan says how many are missing
    ({"CT": 3, "OCT": 2}, 70, False, {**{m: 0 for m in SEVEN}, "CT": 3, "OCT": 2},
     {"MRI": 10, "CT": 7, "ultrasound": 10, "X-ray": 10, "microscopy": 10, "dermatology": 10, "OCT": 8}),
]


@pytest.mark.parametrize("available,target,include_none,selected,shortfall", CASES)
def test_plan_quotas(available, target, include_none, selected, shortfall):
    plan = plan_quotas(available, target, include_none)
    assert {m: p.selected for m, p in plan.modalities.items()} == selected
    assert {m: p.shortfall for m, p in plan.modalities.items() if p.shortfall} == shortfall
    assert ("none" in plan.modalities) == include_none
    assert plan.total_selected == min(target, sum(v for m, v in available.items() if include_none or m != "none"))


def _records(counts: dict[str, int]) -> list[MCQRecord]:
    return [
        MCQRecord(id=f"{m}-{i:03d}", question=f"q{i}", options=["a", "b", "c", "d"], answer="A", image=None,
                  task="pmc-vqa", modality=m)
        for m, n in counts.items() for i in range(n)
    ]


def test_balance_is_deterministic_for_a_seed_and_independent_of_input_order():
    recs = _records({**{m: 20 for m in SEVEN}, "none": 20})
    a = balance_by_modality(recs, target=35, seed=1)
    b = balance_by_modality(list(reversed(recs)), target=35, seed=1)
    c = balance_by_modality(recs, target=35, seed=2)
    assert [r.id for r in a.records] == [r.id for r in b.records]
    assert [r.id for r in a.records] != [r.id for r in c.records]
    assert len(a.records) == 35 and not any(r.modality == "none" for r in a.records)
    assert {m: sum(r.modality == m for r in a.records) for m in SEVEN} == {m: 5 for m in SEVEN}


def test_none_included_on_request():
    res = balance_by_modality(_records({"CT": 10, "none": 10}), target=8, include_none=True, seed=0)
    assert sum(r.modality == "none" for r in res.records) == 4  # 8 quotas of 1, six empty -> shared by CT and none


def test_unknown_label_and_bad_target_are_errors():
    with pytest.raises(ValueError, match="unknown modality label"):
        plan_quotas({"PET": 3}, 10)
    with pytest.raises(ValueError, match="target=0"):
        plan_quotas({"CT": 3}, 0)


def test_table_and_chart(tmp_path):
    plan = plan_quotas({**{m: 50 for m in SEVEN}, "MRI": 4}, 70)
    md = counts_table_md(plan)
    assert "| MRI | 4 | 10 | 4 | 6 |" in md and "| **total** | 304 | 70 | 70 | 6 |" in md
    assert "6 moved from short modalities to others" in md
    png = counts_chart(plan, tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
