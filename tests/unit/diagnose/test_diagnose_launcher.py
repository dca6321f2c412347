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
    m = d["overall"]
    assert m["n"] == 6 and set(m["pass_at_k"]) == {"1", "2", "3", "4"}
    assert set(m["ci"]) == {"acc_at_1", "pass_at_k", "gap"}
    assert m["pass_at_k"]["1"] <= m["pass_at_k"]["4"]  # the curve never falls
    dec = d["decision"]
    assert dec["branch"] == "sharpen" and dec["forced"] is True and "FORCED" in dec["rule"]
    assert set(dec["per_modality"]) == {"radiology", "microscopy"}
    rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(len(r["samples"]) == 4 for r in rows)
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
    ],
)
def test_config_validation(kw, msg):
    with pytest.raises(ValueError, match=msg.replace("(", r"\(")):
        DiagnoseConfig(**kw)
