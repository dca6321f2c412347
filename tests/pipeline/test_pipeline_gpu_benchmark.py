"""benchmarks/pipeline_gpu.py in its CPU smoke mode: every step's launcher in DAG order on the tiny model (curate with
the tiny labeller -> probe -> diagnose -> bridge: sft -> re-diagnose -> grpo -> evaluate), each timed, the run's
report written; then the diagnosis sampler timed at two lengths with a projection to 1,200 questions."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_pipeline_gpu_benchmark_smoke_on_cpu(tmp_path, capsys):
    from benchmarks.pipeline_gpu import main

    out = tmp_path / "bench.json"
    assert main(["--tiny", "--device", "cpu", "--work", str(tmp_path / "work"), "--benchmarks", "vqa-rad",
                 "--eval-questions", "4", "--timing-questions", "2,2", "--timing-batch", "2,2",
                 "--json-out", str(out)]) == 0
    res = json.loads(out.read_text())
    pl = res["pipeline"]
    # A random model's support is nil: the bridge branch, and the forced gate runs the sharpen step too.
    assert pl["branch"] == "bridge" and pl["gate"] == "proceed"
    assert [s["step"] for s in pl["steps"]] == ["curate", "probe", "diagnose", "sft", "rediagnose", "grpo", "evaluate"]
    assert all(s["status"] == 0 and s["seconds"] > 0 for s in pl["steps"])
    work = tmp_path / "work"
    assert (work / "report.html").is_file() and (work / "run" / "grpo_model" / "lineage.json").is_file()
    metrics = json.loads((work / "run" / "grpo_model" / "metrics.json").read_text())
    assert metrics["init_from"] == "init_model" and metrics["steps"] == 2  # GRPO trained the SFT model
    timing = res["diagnosis_timing"]
    assert [t["new_tokens"] for t in timing] == [256, 32]
    for t in timing:
        assert t["questions"] == 2 and t["sampled_tokens"] > 0 and t["projected_1200_s"] > t["seconds"]
    assert "SUMMARY pipeline_gpu:" in capsys.readouterr().out


def test_pipeline_gpu_benchmark_refuses_unknown_phases():
    from benchmarks.pipeline_gpu import main

    with pytest.raises(SystemExit, match="--phases"):
        main(["--phases", "train"])
