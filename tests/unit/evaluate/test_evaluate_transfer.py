"""Transfer regimes relative to the trained task, and the benchmark-overfit flag (table-driven)."""

from __future__ import annotations

import pytest

from components.evaluate.transfer import flag_benchmark_overfit, regime_for

# (evaluated task, train task, group override, expected regime, words in the shift)
REGIME_CASES = [
    ("organamnist", "organamnist", None, "in-domain", "same task"),  # the trained task itself
    ("organcmnist", "organamnist", None, "within-modality", "same modality (CT)"),  # OrganA -> OrganC, both CT
    ("organsmnist", "organamnist", None, "within-modality", "same modality (CT)"),  # OrganA -> OrganS
    (
        "pneumoniamnist",
        "organamnist",
        None,
        "within-modality",
        "larger shift: CT -> X-ray",
    ),  # same group, other modality
    ("pathmnist", "octmnist", None, "cross-modality", "visible light -> microscopy"),  # OCT -> Path
    ("pathmnist", "organamnist", None, "cross-modality", "radiology -> microscopy"),  # OrganA -> Path
    ("octmnist", "organamnist", None, "cross-modality", "radiology -> visible light"),  # OrganA -> OCT
    ("pathmnist", "pmc-vqa", None, "cross-dataset", "pmc-vqa"),  # trained on the PMC-VQA RL set
    ("mytask", "organamnist", "radiology", "within-modality", "same modality"),  # unknown task, group from meta.group
]


@pytest.mark.parametrize("task,train,group,regime,shift", REGIME_CASES)
def test_regime_for(task, train, group, regime, shift):
    r = regime_for(task, train, group)
    assert r.name == regime
    assert shift in r.shift


def test_regime_for_unknown_task_without_group_names_the_fix():
    with pytest.raises(ValueError, match="meta.group"):
        regime_for("mytask", "organamnist")


# (bench deltas, transfer deltas, margin, expected [(benchmark, sorted lost names)])
FLAG_CASES = [
    # ChexReason: +23 on the trained benchmark, -19 on another hospital's data -> flagged
    ({"chexpert": 0.23}, {"benchmark nih": -0.19}, 0.05, [("chexpert", ["benchmark nih"])]),
    # wins in-domain, transfer flat -> clean
    ({"pmc-vqa": 0.10}, {"cross-dataset": 0.0, "benchmark slake": -0.02}, 0.05, []),
    # loses transfer but did not win its benchmark -> not this failure mode
    ({"pmc-vqa": 0.03}, {"cross-modality": -0.20}, 0.05, []),
    # exactly at the margin counts as neither win nor loss
    ({"pmc-vqa": 0.05}, {"cross-modality": -0.05}, 0.05, []),
    # several losses are all listed, worst first
    (
        {"organamnist": 0.2},
        {"within-modality": -0.1, "cross-modality": -0.3, "benchmark x": 0.1},
        0.05,
        [("organamnist", ["cross-modality", "within-modality"])],
    ),
    # missing deltas (None / NaN) are ignored, not treated as losses
    ({"pmc-vqa": 0.2}, {"cross-dataset": None, "benchmark y": float("nan")}, 0.05, []),
    # margin 0: any gain with any loss
    ({"pmc-vqa": 0.01}, {"cross-dataset": -0.01}, 0.0, [("pmc-vqa", ["cross-dataset"])]),
    # no in-domain delta at all -> nothing to flag
    ({}, {"cross-dataset": -0.5}, 0.05, []),
]


@pytest.mark.parametrize("bench,transfer,margin,expected", FLAG_CASES)
def test_flag_benchmark_overfit(bench, transfer, margin, expected):
    flags = flag_benchmark_overfit(bench, transfer, margin, metric="acc_at_1")
    assert [(f["benchmark"], list(f["lost"])) for f in flags] == expected
    for f in flags:
        assert f["metric"] == "acc_at_1" and f["benchmark"] in f["message"]


def test_flag_rejects_negative_margin():
    with pytest.raises(ValueError, match="margin"):
        flag_benchmark_overfit({"a": 0.2}, {"b": -0.2}, -0.1)


def D(value: float, lo: float, hi: float, p_loss: float) -> dict:
    """A paired delta of one metric: mean change, its 95% interval, p of a loss beyond the margin."""
    return {"value": value, "ci": [lo, hi], "p_loss": p_loss}


def E(acc: dict, passk: dict | None = None) -> dict:
    return {"acc_at_1": acc, "pass_at_k": passk or D(0.0, -0.01, 0.01, 1.0)}


# (in-domain deltas, transfer deltas, expected [(metric, benchmark, lost names)]) at margin 0.05, alpha 0.05
GUARD_CASES = [
    # ChexReason: a confident in-domain gain and a confident transfer loss -> flagged
    ({"pmc-vqa": E(D(0.23, 0.15, 0.31, 1.0))}, {"benchmark nih": E(D(-0.19, -0.27, -0.11, 0.001))},
     [("acc_at_1", "pmc-vqa", ["benchmark nih"])]),
    # the point estimates would flag, but the gain's interval reaches below 0 (few questions) -> clean
    ({"pmc-vqa": E(D(0.5, -0.25, 1.0, 1.0))}, {"cross-dataset": E(D(-0.5, -1.0, 0.0, 0.2))}, []),
    # a confident gain, a loss whose one-sided test does not reject -> clean
    ({"pmc-vqa": E(D(0.2, 0.1, 0.3, 1.0))}, {"cross-modality": E(D(-0.2, -0.45, 0.05, 0.08))}, []),
    # p = 0.03 rejects on its own, but not after Holm over 3 checks x 2 metrics (0.03 > 0.05 / 6) -> clean
    ({"pmc-vqa": E(D(0.2, 0.1, 0.3, 1.0))},
     {"cross-modality": E(D(-0.2, -0.4, -0.06, 0.03)), "benchmark a": E(D(0, -0.1, 0.1, 0.9)),
      "benchmark b": E(D(0, -0.1, 0.1, 0.9))}, []),
    # two strong losses survive Holm; both listed, worst first
    ({"organamnist": E(D(0.2, 0.1, 0.3, 1.0))},
     {"within-modality": E(D(-0.1, -0.15, -0.06, 0.001)), "cross-modality": E(D(-0.3, -0.4, -0.2, 0.001))},
     [("acc_at_1", "organamnist", ["cross-modality", "within-modality"])]),
    # the loss is on Pass@K, the gain on Pass@K too -> flagged for that metric only
    ({"pmc-vqa": E(D(0.0, -0.1, 0.1, 1.0), D(0.1, 0.05, 0.15, 1.0))},
     {"cross-dataset": E(D(0.0, -0.1, 0.1, 1.0), D(-0.2, -0.3, -0.1, 0.001))},
     [("pass_at_k", "pmc-vqa", ["cross-dataset"])]),
    # missing deltas (None values) are not checks
    ({"pmc-vqa": E(D(0.2, 0.1, 0.3, 1.0))}, {"cross-dataset": {"acc_at_1": {"value": None}}}, []),
    # no in-domain measurement at all -> nothing to flag
    ({}, {"cross-dataset": E(D(-0.5, -0.6, -0.4, 0.001))}, []),
]


@pytest.mark.parametrize("bench,transfer,expected", GUARD_CASES)
def test_transfer_guard(bench, transfer, expected):
    from components.evaluate.transfer import transfer_guard

    out = transfer_guard(bench, transfer, margin=0.05, alpha=0.05)
    assert [(f["metric"], f["benchmark"], list(f["lost"])) for f in out["flags"]] == expected
    assert out["m"] == sum(1 for e in transfer.values() for d in e.values() if d.get("value") is not None)
    for f in out["flags"]:
        assert "Holm" in f["message"] and f["benchmark"] in f["message"]


def test_transfer_guard_rejects_negative_margin():
    from components.evaluate.transfer import transfer_guard

    with pytest.raises(ValueError, match="margin"):
        transfer_guard({}, {}, margin=-0.1)
