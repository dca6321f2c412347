"""The RQ3 study's cells (pure, table-driven) and its launcher on hand-written results: regimes as the paper names
them, before = the bridged model for bridged runs, the bridge's SFT data flagged on the cells it held."""

from __future__ import annotations

import json

import pytest

from components.evaluate.study import main, study_cells


def M(acc, pk):
    return {"n": 10, "acc_at_1": acc, "pass_at_k": {"1": acc, "4": pk},
            "ci": {"acc_at_1": [acc - 0.1, acc + 0.1], "pass_at_k": [pk - 0.1, pk + 0.1]}}


def D(a, p):
    return {"acc_at_1": {"value": a, "ci": [a - 0.05, a + 0.05]}, "pass_at_k": {"value": p, "ci": [p - 0.05, p + 0.05]}}


def results(train_task, tasks, bridged=False, sft_tasks=()):
    out = {"train_task": train_task, "k": 4, "stages": ["base", "sft", "trained"] if bridged else ["base", "trained"],
           "sft_tasks": list(sft_tasks), "transfer": {"tasks": {}}}
    for t in tasks:
        e = {"group": None, "base": M(0.1, 0.5), "trained": M(0.4, 0.6), "delta": D(0.3, 0.1)}
        if bridged:
            e["sft"] = M(0.3, 0.7)
            e["deltas"] = {"sft_to_rl": D(0.1, -0.1), "base_to_sft": D(0.2, 0.2), "base_to_final": D(0.3, 0.1)}
        out["transfer"]["tasks"][t] = e
    return out


# (GRPO task, evaluated task, expected regime, a paper pair?)
REGIME_CASES = [
    ("organamnist", "organamnist", "in-domain", True),
    ("organamnist", "organcmnist", "within-modality", True),  # same family, another view
    ("organamnist", "pneumoniamnist", "within-modality (larger shift)", True),  # CT -> X-ray
    ("organamnist", "pathmnist", "cross-modality", True),
    ("octmnist", "pathmnist", "cross-modality", True),
    ("pathmnist", "octmnist", "cross-modality", False),  # measured, but not a pair the paper reports
    ("octmnist", "dermamnist", "within-modality", False),  # both visible light
]


@pytest.mark.parametrize("rl_task, task, regime, pair", REGIME_CASES)
def test_regimes_as_the_paper_names_them(rl_task, task, regime, pair):
    (cell,) = study_cells([("base", results(rl_task, [task]))])
    assert (cell["regime"], cell["paper_pair"]) == (regime, pair)


def test_before_is_the_bridged_model_for_bridged_runs_and_sft_targets_are_flagged():
    base = study_cells([("base", results("organamnist", ["pathmnist"]))])[0]
    assert base["before"] == "base" and base["acc_before"] == 0.1 and base["acc_delta"]["value"] == 0.3
    bridged = study_cells([("bridged", results("organamnist", ["pathmnist", "organcmnist"], True, ["pathmnist"]))])
    by_task = {c["task"]: c for c in bridged}
    # before RL = the SFT (bridged) model; the change is SFT -> RL, not base -> final
    assert by_task["pathmnist"]["before"] == "sft" and by_task["pathmnist"]["acc_before"] == 0.3
    assert by_task["pathmnist"]["pass_delta"]["value"] == -0.1
    assert by_task["pathmnist"]["sft_trained_on_task"] and not by_task["organcmnist"]["sft_trained_on_task"]
    with pytest.raises(ValueError, match="run kind 'rl'"):
        study_cells([("rl", results("organamnist", ["pathmnist"]))])


def test_launcher_writes_report_heatmap_and_says_when_sft_held_a_target(tmp_path):
    dirs = {}
    for name, res in (("a", results("organamnist", ["organamnist", "pathmnist"])),
                      ("b", results("organamnist", ["organamnist", "pathmnist"], True, ["pathmnist"]))):
        d = tmp_path / name
        d.mkdir()
        (d / "results.json").write_text(json.dumps(res))
        dirs[name] = d
    out, report = tmp_path / "study", tmp_path / "study.html"
    assert main(["--from-base", str(dirs["a"]), "--from-bridged", str(dirs["b"]), "--out", str(out),
                 "--out-report", str(report)]) == 0
    study = json.loads((out / "study.json").read_text())
    assert study["tasks"] == ["organamnist"] and study["sft_data_includes_transfer_targets"] == ["pathmnist"]
    html = report.read_text()
    assert 'id="sft-targets"' in html and "Path" in html and "data:image/png;base64," in html
    assert (out / "transfer_heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| Organ" in (out / "report.md").read_text()


def test_launcher_names_a_directory_without_results(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["--from-base", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--out-report",
                 str(tmp_path / "o.html")]) == 2
    assert "no results.json" in capsys.readouterr().err
