"""Evaluation end to end: scripted backends give hand-computed numbers and raise the overfit flag; the launcher runs
the tiny model as base and trained model and writes results, report and lineage; the kfp component's signature."""

from __future__ import annotations

import csv
import json

import pytest

from components.common.io import sha256_path
from components.evaluate.__main__ import main
from components.evaluate.config import EvalConfig
from components.evaluate.evaluation import evaluate_models
from components.evaluate.report import BANNER
from components.evaluate.synthetic import write_synthetic_benchmarks


class ScriptedBackend:
    """Answers every question with one fixed letter, greedy and sampled."""

    def __init__(self, letter: str):
        self.letter = letter
        self.calls = 0

    def greedy(self, prompts):
        self.calls += 1
        return [f"<think>x</think><answer>{self.letter}</answer>" for _ in prompts]

    def sample(self, prompts, n):
        return [[f"<answer>{self.letter}</answer>"] * n for _ in prompts]

    def sample_and_greedy(self, prompts, n):
        return self.sample(prompts, n), self.greedy(prompts)


def _pmc_with_labels(root, labels):
    """A synthetic PMC-VQA copy whose Answer_label column is set by hand."""
    write_synthetic_benchmarks(root, ["pmc-vqa"], n=len(labels))
    path = root / "pmc-vqa" / "test_clean.csv"
    rows = list(csv.DictReader(path.open()))
    for row, label in zip(rows, labels):
        row["Answer_label"] = label
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_scripted_models_give_hand_computed_numbers_and_the_flag(upstream, tmp_path):
    root = tmp_path / "bench"
    _pmc_with_labels(root, ["A"] * 15 + ["B"] * 5)  # trained (always A) gets 15/20, base (always B) 5/20
    cfg = EvalConfig(benchmarks="pmc-vqa", train_task="pmc-vqa", k=2, max_questions=0, n_boot=500)
    results, samples = evaluate_models(
        cfg,
        "trained-ref",
        "base-ref",
        upstream["eval_set"],
        str(root),
        tmp_path / "work",
        backends={"base": ScriptedBackend("B"), "trained": ScriptedBackend("A")},
    )
    pmc = results["benchmarks"]["pmc-vqa"]
    assert pmc["base"]["acc_at_1"] == pytest.approx(0.25) and pmc["trained"]["acc_at_1"] == pytest.approx(0.75)
    assert pmc["delta"]["acc_at_1"]["value"] == pytest.approx(0.5)
    assert pmc["trained"]["pass_at_k"] == pytest.approx({"1": 0.75, "2": 0.75})
    assert pmc["delta"]["acc_at_1"]["ci"][0] > 0  # 20 paired questions: the gain is confidently above 0
    # chance-corrected beside the raw numbers: 4 options, k = 2 -> chance 0.4375
    assert pmc["trained"]["corrected"]["pass_at_k"] == pytest.approx((0.75 - 0.4375) / 0.5625)
    # the eval set's answers are all B: base 100%, trained 0%, every MedMNIST task is cross-dataset from pmc-vqa
    tr = results["transfer"]
    assert set(tr["regimes"]) == {"cross-dataset"} and tr["regimes"]["cross-dataset"]["tasks"] == [
        "organamnist",
        "organcmnist",
        "pathmnist",
    ]
    assert tr["regimes"]["cross-dataset"]["delta"]["acc_at_1"]["value"] == pytest.approx(-1.0)
    guard = results["overfit"]
    flags = guard["flags"]
    assert [(f["metric"], f["benchmark"]) for f in flags] == [("acc_at_1", "pmc-vqa"), ("pass_at_k", "pmc-vqa")]
    assert guard["m"] == 2 and all(c["rejected"] for c in guard["checks"])  # cross-dataset, two metrics, Holm
    assert "Holm over 2 transfer checks" in flags[0]["message"]
    assert len(samples) == 2 * (20 + 6)


def test_few_questions_do_not_flag_on_point_estimates(upstream, tmp_path):
    # the same direction as above on 4 questions: +50 points, but the gain's interval reaches below 0
    root = tmp_path / "bench"
    _pmc_with_labels(root, ["A", "A", "A", "B"])
    cfg = EvalConfig(benchmarks="pmc-vqa", train_task="pmc-vqa", k=2, max_questions=0, n_boot=500)
    results, _ = evaluate_models(cfg, "t", "b", upstream["eval_set"], str(root), tmp_path / "work",
                                 backends={"base": ScriptedBackend("B"), "trained": ScriptedBackend("A")})
    assert results["benchmarks"]["pmc-vqa"]["delta"]["acc_at_1"]["value"] == pytest.approx(0.5)
    assert results["overfit"]["flags"] == []


def test_three_stages_keep_sft_and_rl_gains_apart(upstream, tmp_path):
    # base always wrong (A), the SFT model right on organ tasks (B), the RL model right everywhere (B); the SFT step
    # trained on organcmnist, which is then in-domain, not transfer
    cfg = EvalConfig(benchmarks="none", train_task="pmc-vqa", k=2, n_boot=200)
    results, rows = evaluate_models(
        cfg, "final", "base", upstream["eval_set"], None, tmp_path / "work",
        backends={"base": ScriptedBackend("A"), "sft": ScriptedBackend("B"), "trained": ScriptedBackend("B")},
        sft_model_ref="sft", sft_tasks=["organcmnist"],
    )
    assert results["stages"] == ["base", "sft", "trained"] and results["models"]["sft"] == "sft"
    regimes = results["transfer"]["regimes"]
    assert regimes["in-domain"]["tasks"] == ["organcmnist"]  # trained on by the SFT step
    assert regimes["cross-dataset"]["tasks"] == ["organamnist", "pathmnist"]
    d = regimes["cross-dataset"]["deltas"]
    assert d["base_to_sft"]["acc_at_1"]["value"] == pytest.approx(1.0)  # the bridge's gain
    assert d["sft_to_rl"]["acc_at_1"]["value"] == pytest.approx(0.0)  # RL added nothing on top
    assert d["base_to_final"]["acc_at_1"]["value"] == pytest.approx(1.0)
    assert results["transfer"]["tasks"]["organcmnist"]["shift"] == "trained on by the SFT step (bridge)"
    assert {r["model"] for r in rows} == {"base", "sft", "trained"}


def test_train_task_on_medmnist_sets_the_regimes(upstream, tmp_path):
    cfg = EvalConfig(benchmarks="none", train_task="organamnist", k=1, n_boot=100)
    results, _ = evaluate_models(
        cfg,
        "t",
        "b",
        upstream["eval_set"],
        None,
        tmp_path / "work",
        backends={"base": ScriptedBackend("B"), "trained": ScriptedBackend("B")},
    )
    regimes = results["transfer"]["regimes"]
    assert {r: e["tasks"] for r, e in regimes.items()} == {
        "in-domain": ["organamnist"],
        "within-modality": ["organcmnist"],
        "cross-modality": ["pathmnist"],
    }
    assert results["overfit"]["checked"] and results["overfit"]["flags"] == []  # identical models: no delta


def test_launcher_end_to_end_with_the_tiny_model(upstream_with_model, tiny_model_dir, tmp_path):
    up = upstream_with_model
    bench = write_synthetic_benchmarks(tmp_path / "bench", ["vqa-rad", "mmmu-med"], n=6)
    results_dir, report = tmp_path / "out" / "results", tmp_path / "out" / "report.html"
    rc = main(
        [
            "--model",
            str(up["model"]),
            "--base-model",
            str(tiny_model_dir),
            "--eval-set",
            str(up["eval_set"]),
            "--diagnosis",
            str(up["diagnosis"]),
            "--probe-report",
            str(up["probe_report"]),
            "--curation-report",
            str(up["curation_report"]),
            "--benchmarks-root",
            str(bench),
            "--benchmarks",
            "vqa-rad,mmmu-med",
            "--max-questions",
            "0",
            "--k",
            "2",
            "--max-new-tokens",
            "4",
            "--prompt-format",
            "direct",
            "--train-task",
            "organamnist",
            "--n-boot",
            "100",
            "--device",
            "cpu",
            "--out-results",
            str(results_dir),
            "--out-report",
            str(report),
        ]
    )
    assert rc == 0
    res = json.loads((results_dir / "results.json").read_text())
    assert set(res["benchmarks"]) == {"vqa-rad", "mmmu-med"}
    n_questions = sum(e["base"]["n"] for e in [*res["benchmarks"].values(), *res["open"].values()])
    assert set(res["transfer"]["regimes"]) == {"in-domain", "within-modality", "cross-modality"}
    assert res["synthetic"] and res["models"] == {"trained": str(up["model"]), "base": str(tiny_model_dir)}
    # VQA-RAD's open questions are scored apart, with the same harness
    assert set(res["open"]) == {"vqa-rad (open)"} and res["open"]["vqa-rad (open)"]["base"]["n"] == 2
    assert res["benchmarks"]["vqa-rad"]["base"]["n"] == 4  # 6 rows: 4 yes/no, 2 open
    assert "token_f1" in res["open"]["vqa-rad (open)"]["trained"] and res["harness"]["prompt_format"] == "direct"
    # 4 new tokens: every completion is cut at max_new_tokens, and the results say so
    assert res["truncation"]["trained"]["samples"] == 1.0
    metrics = json.loads((results_dir / "metrics.json").read_text())
    assert {"acc_at_1_vqa-rad", "acc_at_1_mmmu-med", "overfit_flags"} <= set(metrics)
    rows = [json.loads(x) for x in (results_dir / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * (n_questions + 6) and all(len(r["samples"]) == 2 for r in rows)
    assert (results_dir / "benchmarks" / "vqa-rad" / "records.jsonl").is_file()  # the exact questions asked
    lineage = json.loads((results_dir / "lineage.json").read_text())
    assert lineage["step"] == "evaluate" and lineage["synthetic"] and lineage["sha256"] == sha256_path(results_dir)
    assert lineage["params"]["k"] == 2 and lineage["params"]["prompt_format"] == "direct"
    html = report.read_text()
    assert BANNER in html and "SHARPEN" in html
    assert lineage["sha256"][:12] in html  # the report names the results' final hash
    for step in ("curate", "probe", "diagnose", "grpo", "evaluate"):
        assert f"<tr><td>{step}</td>" in html
    assert "Branch: SHARPEN" in (results_dir / "report.md").read_text()


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--k", "0"], "k=0"),  # no samples: no Pass@K
        (["--benchmarks", "chexpert"], "chexpert"),  # unknown benchmark is named
        (["--prompt-format", "verbose"], "verbose"),  # unknown prompt format is named
    ],
)
def test_launcher_rejects_bad_config(flags, message, tmp_path, capsys):
    rc = main(
        [
            "--model",
            "m/x",
            "--base-model",
            "m/y",
            "--out-results",
            str(tmp_path / "r"),
            "--out-report",
            str(tmp_path / "r.html"),
            *flags,
        ]
    )
    assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_component_signature_matches_the_pipeline_interface():
    from components.evaluate.component import evaluate

    spec = evaluate.component_spec
    assert list(spec.inputs) == [
        "model",
        "base_model_ref",
        "eval_set",
        "benchmarks_root",
        "benchmarks",
        "k",
        "prompt_format",
        "max_new_tokens",
        "temperature",
        "top_p",
        "backend",
        "min_pixels",
        "max_pixels",
        "judge_model",
        "judge_mode",
        "chance_ceiling",
        "train_task",
        "final_stage",
        "seed",
        "sft_model",
        "diagnosis",
        "rediagnosis",
        "probe_report",
        "curation_report",
    ]
    # the harness settings the diagnosis uses are all passed on (evaluate ignored temperature, top-p and backend)
    from components.diagnose.component import diagnose

    harness = {"k", "prompt_format", "max_new_tokens", "temperature", "top_p", "backend", "min_pixels", "max_pixels",
               "judge_model", "judge_mode", "chance_ceiling", "seed"}
    assert harness <= set(spec.inputs) and harness <= set(diagnose.component_spec.inputs)
    types = {n: s.type for n, s in {**spec.inputs, **spec.outputs}.items()}
    assert types["model"].startswith("system.Model") and types["eval_set"].startswith("system.Dataset")
    assert types["k"] == "Integer" and types["benchmarks"] == "String"
    assert (
        types["results"].startswith("system.Artifact")
        and types["report"].startswith("system.HTML")
        and types["metrics"].startswith("system.Metrics")
    )
