"""benchmarks/labeller.py in its CPU smoke mode: builds the tiny 32B-shaped stand-in, labels through the stock and
the fast path, and reports figures for both that agree (float32: same labels, same scores); `--liger` is refused on
the CPU before the model is built."""

from __future__ import annotations

import json

import pytest


def test_labeller_benchmark_smoke_on_cpu(tmp_path, capsys):
    from benchmarks.labeller import main

    out = tmp_path / "bench.json"
    assert main(["--device", "cpu", "--small", "--questions", "12", "--baseline-questions", "12",
                 "--warmup-questions", "2", "--json-out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [r["variant"] for r in res["results"]] == ["baseline", "fast"]
    assert [r["liger_kernels"] for r in res["results"]] == [False, False]  # --liger adds a run with them
    for r in res["results"]:
        assert r["questions"] == 12 and r["questions_per_s"] > 0 and r["prompt_flops"] > 0 and r["prompt_pass_s"] > 0
    assert res["results"][1]["batches"] < res["results"][0]["batches"]  # token-budget batches hold more questions
    assert res["agreement"]["same_label"] == 12 and res["agreement"]["max_abs_score_diff"] < 1e-3
    assert "SUMMARY labeller cpu" in capsys.readouterr().out


def test_labeller_benchmark_refuses_liger_on_cpu_before_building_the_model(monkeypatch):
    import benchmarks.labeller as bench

    monkeypatch.setattr(bench, "build_model", lambda *a, **k: pytest.fail("the model was built"))
    with pytest.raises(ValueError, match="liger_kernels=True: Liger's kernels are Triton kernels for CUDA GPUs"):
        bench.main(["--device", "cpu", "--small", "--liger"])
