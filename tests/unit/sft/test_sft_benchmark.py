"""benchmarks/sft.py in its CPU smoke mode: the bridge step's trainer as the recipe has it and with its speed knobs,
one epoch each over the same rows, tokens/s, padding and MFU reported; Liger (CUDA only) reported as skipped."""

from __future__ import annotations

import json

import pytest


def test_sft_benchmark_smoke_on_cpu(tmp_path, capsys):
    from benchmarks.sft import main

    out = tmp_path / "bench.json"
    assert main(["--tiny", "--device", "cpu", "--work", str(tmp_path / "work"), "--examples", "12", "--runs",
                 "baseline:2,grouped:4,grouped-nockpt-liger:4", "--json-out", str(out)]) == 0
    res = json.loads(out.read_text())
    runs = {r["run"]: r for r in res["results"]}
    assert runs["grouped-nockpt-liger:4"]["skipped"] == "Liger needs CUDA"
    for name, steps in (("baseline:2", 6), ("grouped:4", 3)):  # one epoch over the same 12 rows
        r = runs[name]
        assert r["steps"] == steps and r["tokens_per_s"] > 0 and r["model_tflops_per_s"] > 0
        assert 0 <= r["padding_share"] < 1 and r["loss_first"] is not None
    assert len(res["lengths"]) == 12 and len(set(res["lengths"])) > 3  # lengths really vary
    assert res["summary"]["speedup"] > 0
    assert "SUMMARY sft:" in capsys.readouterr().out


@pytest.mark.parametrize("spec", ["fast:4", "grouped", "grouped:0", "baseline:x"])
def test_sft_benchmark_refuses_bad_run_specs(spec):
    from benchmarks.sft import parse_run

    with pytest.raises(SystemExit, match="VARIANT:MICRO_BATCH"):
        parse_run(spec)
