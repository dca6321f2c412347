"""The perception-limited rule, probe.json schema, the Table 1-style markdown and the chart."""

from __future__ import annotations

import pytest

from components.probe.linear import ProbeResult
from components.probe.report import bar_chart, build_probe_json, perception_limited, summary_metrics, table_md


@pytest.mark.parametrize(
    "acc, medvit, chance, limited",
    [
        (90.0, 97.3, 50.0, False),  # 90 >= 0.8 x 97.3 = 77.84 and well above chance
        (77.0, 97.3, 50.0, True),  # below 80% of the MedViT-V2 reference
        (60.0, 57.8, 56.0, True),  # above 0.8 x 57.8 but within 5 points of chance (majority class)
        (62.0, 57.8, 56.0, False),  # 6 points above chance and above 0.8 x 57.8
    ],
)
def test_perception_limited_rule(acc, medvit, chance, limited):
    assert perception_limited(acc, medvit, chance, limit_fraction=0.8, chance_margin=5.0) is limited


@pytest.mark.parametrize(
    "acc, chance, auc, limited",
    [
        (94.0, 93.0, 82.0, False),  # ChestMNIST: accuracy near the majority guess says nothing; AUC 82 >= 70 separates
        (97.0, 93.0, 61.0, True),  # high per-finding accuracy, but AUC 61 < 70: the tower barely ranks the findings
        (94.0, 93.0, None, True),  # no AUC measurable (one class in the test labels): cannot clear the task
        (94.0, 93.0, 70.0, False),  # exactly at the threshold clears it
    ],
)
def test_perception_limited_rule_for_multi_label_uses_auc(acc, chance, auc, limited):
    assert perception_limited(acc, 96.7, chance, 0.8, 5.0, multilabel=True, auc=auc, auc_threshold=70.0) is limited


def _results():
    return {
        "pneumoniamnist": ProbeResult(95.0, 97.5, 62.5, 100, 40, 0.1),
        "pathmnist": ProbeResult(40.0, 70.0, 11.0, 90, 45, 1.2),
        "chestmnist": ProbeResult(94.0, None, 93.0, 80, 30, 0.3),
    }


def test_probe_json_schema_and_groups():
    probe = build_probe_json(_results(), pooling="mean", synthetic=True, limit_fraction=0.8, chance_margin=5.0)
    assert set(probe) >= {"tasks", "pooling", "synthetic", "rule"}
    t = probe["tasks"]["pneumoniamnist"]
    assert set(t) >= {"name", "group", "modality", "accuracy", "auc", "medvit_v2", "qwen25vl_7b_probe",
                      "perception_limited", "n_train", "n_test"}
    assert (t["name"], t["group"], t["medvit_v2"], t["qwen25vl_7b_probe"]) == ("Pneumonia", "radiology", 97.3, 92.52)
    assert [f for f, v in probe["tasks"].items() if v["perception_limited"]] == ["pathmnist", "chestmnist"]
    assert probe["tasks"]["chestmnist"]["auc"] is None
    assert probe["groups"]["microscopy"]["perception_limited"] == ["pathmnist"]
    assert "0.8" in probe["rule"] and "5 points" in probe["rule"] and "AUC < 70" in probe["rule"]
    assert probe["tasks"]["chestmnist"]["rule_used"] == "AUC < 70" and probe["tasks"]["pathmnist"]["rule_used"] == "accuracy"
    assert summary_metrics(probe) == {"mean_probe_accuracy": 76.3333, "n_perception_limited": 2.0, "n_tasks": 3.0}


def test_table_and_chart(tmp_path):
    probe = build_probe_json(_results(), pooling="max", synthetic=True, limit_fraction=0.8, chance_margin=5.0)
    md = table_md(probe)
    assert "SYNTHETIC" in md and "## radiology" in md and "## microscopy" in md and "## visible light" not in md
    assert "| MedViT-V2 (paper) | 97.30 | 96.70 |" in md  # radiology row: Pneumonia, Chest
    assert "| Qwen2.5-VL-7B tower (paper) | 89.12 |" in md  # microscopy row: Path
    png = bar_chart(probe, tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
