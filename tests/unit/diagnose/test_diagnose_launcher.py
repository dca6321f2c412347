"""The diagnose launcher end to end on the tiny model and a 6-question MCQ set; config and bad-input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from components.common.records import MCQRecord, save_records
from components.diagnose.__main__ import main
from components.diagnose.config import DiagnoseConfig


def _dataset(root, n=6):
    from PIL import Image

    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    recs = []
    for i in range(n):
        task, modality = (("pneumoniamnist", "X-ray"), ("pathmnist", "microscopy"))[i % 2]
        Image.fromarray(rng.integers(0, 255, (56, 56, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        recs.append(MCQRecord(id=f"q{i}", question="Which class does this image show?", options=["normal", "pneumonia", "other"],
                              answer="ABC"[i % 3], image=f"images/{i}.png", task=task, modality=modality,
                              split="val"))
    save_records(root, recs)
    return root


def _probe(root, tasks):
    root.mkdir()
    (root / "probe.json").write_text(json.dumps({"tasks": tasks, "synthetic": True}))
    return root


def test_launcher_writes_every_output_and_records_forced_branch(tmp_path, tiny_model_dir, capsys):
    data = _dataset(tmp_path / "diag")
    probe = _probe(tmp_path / "probe", {"pneumoniamnist": {"perception_limited": False},
                                         "pathmnist": {"perception_limited": True}})
    out = tmp_path / "diagnosis"
    rc = main(["--model", str(tiny_model_dir), "--data", str(data), "--probe", str(probe), "--k", "4",
               "--max-new-tokens", "8", "--n-boot", "200", "--force-branch", "sharpen", "--out", str(out),
               "--metrics-json", str(tmp_path / "m.json"), "--branch-file", str(tmp_path / "branch.txt")])
    assert rc == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "sharpen"
    assert (tmp_path / "branch.txt").read_text() == "sharpen"
    names = {p.name for p in out.iterdir()}
    assert {"diagnosis.json", "table.md", "samples.jsonl", "metrics.json", "lineage.json", "passk_curves.png",
            "passk_radiology.png", "passk_microscopy.png"} <= names
    d = json.loads((out / "diagnosis.json").read_text())
    for key in ("k", "tau", "prompt_format", "sampling", "synthetic", "overall", "per_task", "per_modality", "decision",
                "perception_limited"):
        assert key in d
    assert d["k"] == 4 and d["synthetic"] is True and d["perception_limited"] == ["pathmnist"]
    assert set(d["per_task"]) == {"pneumoniamnist", "pathmnist"} and set(d["per_modality"]) == {"radiology", "microscopy"}
    assert d["schema_version"] == 2 and d["decided_on"]["set"] == "breadth"  # no target slice: --data decides
    assert d["chance_correction"]["k_used"] == {"3": 1} and d["harness"]["max_new_tokens"] == 8
    m = d["overall"]
    assert m["n"] == 6 and set(m["pass_at_k"]) == {"1", "2", "3", "4"}
    assert set(m["ci"]) == {"acc_at_1", "pass_at_k", "gap"}
    assert set(m["corrected"]["ci"]) == {"acc_at_1", "pass_at_k", "gap"} and m["chance"]["acc_at_1"] == pytest.approx(1 / 3)
    assert 0.0 <= m["truncation_rate"] <= 1.0
    assert m["pass_at_k"]["1"] <= m["pass_at_k"]["4"]  # the curve never falls
    dec = d["decision"]
    assert dec["branch"] == "sharpen" and dec["forced"] is True and "FORCED" in dec["rule"]
    assert set(dec["per_modality"]) == {"radiology", "microscopy"}
    rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(len(r["samples"]) == 4 for r in rows)
    # with 8 new tokens the random model never closes its answer: every completion is counted as truncated
    assert all(s["truncated"] for r in rows for s in r["samples"]) and m["truncation_rate"] == 1.0
    # the recorded correctness agrees with the recorded letters, and the metrics with the rows
    assert all(s["correct"] == (s["letter"] == r["answer"]) for r in rows for s in r["samples"])
    assert m["acc_at_1"] == pytest.approx(sum(r["greedy"]["correct"] for r in rows) / 6)
    assert "SYNTHETIC" in (out / "table.md").read_text()
    lin = json.loads((out / "lineage.json").read_text())
    assert lin["step"] == "diagnose" and lin["params"]["force_branch"] == "sharpen" and lin["synthetic"] is True
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["branch_forced"] == 1.0 and metrics["branch_is_bridge"] == 0.0 and "pass_at_4" in metrics


def test_launcher_bad_inputs(tmp_path, tiny_model_dir, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "records.jsonl").write_text("")
    assert main(["--model", str(tiny_model_dir), "--data", str(empty), "--k", "2", "--out", str(tmp_path / "o")]) == 2
    assert "records.jsonl: the dataset holds no questions" in capsys.readouterr().err
    data = _dataset(tmp_path / "d", n=2)
    bad_probe = _probe(tmp_path / "p", {"pathmnist": {"accuracy": 50.0}})
    assert main(["--model", str(tiny_model_dir), "--data", str(data), "--probe", str(bad_probe), "--k", "2",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "probe.json: tasks.pathmnist lacks the key 'perception_limited'" in err
    assert not (tmp_path / "o").exists()  # nothing half-written


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"k": 0}, "k=0 must be >= 1"),  # no samples, no Pass@K
        ({"k": 8, "n_samples": 4}, "n_samples=4 is below k=8"),  # pass@k needs n >= k
        ({"tau": 50}, "tau=50 must lie in"),  # tau given in percent
        ({"force_branch": "rl"}, "force_branch='rl'"),  # unknown override
        ({"prompt_format": "cot"}, "prompt_format='cot'"),  # unknown prompt format
        ({"temperature": 0.0}, "temperature=0.0"),  # greedy is separate; samples need temperature > 0
        ({"backend": "tgi"}, "backend='tgi'"),  # unknown backend
        ({"judge_mode": "some"}, "judge_mode='some'"),  # judge modes: unreadable | all
        ({"chance_ceiling": 1.0}, "chance_ceiling=1.0"),  # the correction would divide by zero
        ({"min_pixels": 100, "max_pixels": 10}, "min_pixels=100 exceeds"),  # pixel bounds out of order
        ({"force_rl": True}, "after the bridge only"),  # the RL override belongs to the re-diagnosis
    ],
)
def test_config_validation(kw, msg):
    with pytest.raises(ValueError, match=msg.replace("(", r"\(")):
        DiagnoseConfig(**kw)


def _pmc_slice(root, n=8):
    """A held-out PMC-VQA-like slice: 4-option questions labelled with imaging modalities."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(1)
    recs = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (56, 56, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        recs.append(MCQRecord(id=f"p{i}", question=f"What does figure {i} show?", options=["a", "b", "c", "d"],
                              answer="ABCD"[i % 4], image=f"images/{i}.png", task="pmc-vqa",
                              modality=("CT", "MRI")[i % 2], split="train"))
    save_records(root, recs)
    return root


def test_target_slice_decides_and_after_bridge_gate(tmp_path, tiny_model_dir, capsys):
    data, target = _dataset(tmp_path / "diag"), _pmc_slice(tmp_path / "target")
    common = ["--model", str(tiny_model_dir), "--data", str(data), "--target-data", str(target), "--k", "2",
              "--max-new-tokens", "8", "--n-boot", "200"]
    assert main([*common, "--out", str(tmp_path / "d1")]) == 0
    d = json.loads((tmp_path / "d1" / "diagnosis.json").read_text())
    # the branch is decided on the RL target's modality groups; MedMNIST is breadth
    assert d["decided_on"]["set"] == "target" and d["overall"]["n"] == 8 and set(d["per_modality"]) == {"CT", "MRI"}
    assert set(d["breadth"]["per_modality"]) == {"radiology", "microscopy"} and d["breadth"]["overall"]["n"] == 6
    assert d["task_sets"] == {"pmc-vqa": "target", "pneumoniamnist": "breadth", "pathmnist": "breadth"}
    assert d["chance_correction"]["k_used"] == {"3": 1, "4": 2}
    assert "decided on rl_diag_set" in d["decision"]["rule"] and "gate" not in d
    # a random model after a "bridge": still below tau -> stop; tau 0 with force_rl -> proceed, recorded as forced
    capsys.readouterr()
    assert main([*common, "--after-bridge", "true", "--tau", "1.0", "--out", str(tmp_path / "d2")]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "stop"
    g = json.loads((tmp_path / "d2" / "diagnosis.json").read_text())["gate"]
    assert g["outcome"] == "stop" and not g["forced"]
    assert main([*common, "--after-bridge", "true", "--force-rl", "true", "--tau", "1.0", "--out", str(tmp_path / "d3"),
                 "--branch-file", str(tmp_path / "gate.txt")]) == 0
    assert (tmp_path / "gate.txt").read_text() == "proceed"
    g = json.loads((tmp_path / "d3" / "diagnosis.json").read_text())
    assert g["gate"]["forced"] is True and g["stage"] == "after-bridge" and "FORCED" in g["gate"]["rule"]


def test_judge_model_that_cannot_be_opened_is_one_line(tmp_path, tiny_model_dir, capsys):
    data = _dataset(tmp_path / "d", n=2)
    rc = main(["--model", str(tiny_model_dir), "--data", str(data), "--k", "2", "--judge-model",
               str(tmp_path / "no-such-judge"), "--out", str(tmp_path / "o")])
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert rc == 2 and len(err) == 1 and err[0].startswith("python -m components.diagnose: error: ")
    err = err[0]
    assert "judge model" in err and "no-such-judge" in err and "cannot be opened" in err
    assert not (tmp_path / "o").exists()
