"""The privacy flag on the evaluate step: the sample dump keeps outcomes but no completion text, no copy of the
benchmark questions stays beside the results, and the report embeds no picture that came with the inputs."""

from __future__ import annotations

import json

from components.evaluate.__main__ import main
from components.evaluate.synthetic import write_synthetic_benchmarks


def _run(up, tiny_model_dir, tmp_path, *extra):
    bench = write_synthetic_benchmarks(tmp_path / "bench", ["vqa-rad"], n=6)
    results, report = tmp_path / "out" / "results", tmp_path / "out" / "report.html"
    rc = main(["--model", str(up["model"]), "--base-model", str(tiny_model_dir), "--eval-set", str(up["eval_set"]),
               "--diagnosis", str(up["diagnosis"]), "--probe-report", str(up["probe_report"]),
               "--curation-report", str(up["curation_report"]), "--benchmarks-root", str(bench),
               "--benchmarks", "vqa-rad", "--max-questions", "2", "--k", "2", "--max-new-tokens", "4",
               "--prompt-format", "direct", "--train-task", "organamnist", "--n-boot", "100", "--device", "cpu",
               "--out-results", str(results), "--out-report", str(report), *extra])
    assert rc == 0
    return results, report


def test_private_evaluation_keeps_no_texts_or_pictures(upstream_with_model, tiny_model_dir, tmp_path):
    (upstream_with_model["curation_report"] / "counts.png").write_bytes(  # a picture that came with the inputs
        (upstream_with_model["eval_set"] / "images" / "organamnist_0.png").read_bytes())
    results, report = _run(upstream_with_model, tiny_model_dir, tmp_path, "--private")
    rows = [json.loads(line) for line in (results / "samples.jsonl").read_text().splitlines()]

    def keys(v):  # every key at any depth
        if isinstance(v, dict):
            return set(v) | set().union(*(keys(x) for x in v.values()))
        return set().union(*(keys(x) for x in v)) if isinstance(v, list) else set()

    assert rows and not keys(rows) & {"completion", "text", "question", "options"}
    assert any(r.get("open") for r in rows) and all("answer" not in r for r in rows if r.get("open"))  # a reference text
    mcq = [r for r in rows if not r.get("open")]
    assert mcq and all({"letter", "correct"} <= set(r["greedy"]) and all("letter" in s for s in r["samples"]) for r in mcq)
    assert not (results / "benchmarks").exists()
    html = report.read_text()
    assert "data:image/png" in html  # MedBridge's own Pass@k curves stay
    import base64

    picture = base64.b64encode((upstream_with_model["curation_report"] / "counts.png").read_bytes()).decode()
    assert picture not in html
    assert json.loads((results / "lineage.json").read_text())["params"]["private"] is True
    assert json.loads((results / "results.json").read_text())["schema_version"] == 1


def test_without_the_flag_completions_are_kept(upstream_with_model, tiny_model_dir, tmp_path):
    results, _ = _run(upstream_with_model, tiny_model_dir, tmp_path)
    rows = [json.loads(line) for line in (results / "samples.jsonl").read_text().splitlines()]
    assert all(isinstance(r["greedy"]["completion"], str) for r in rows) and (results / "benchmarks").is_dir()
