"""The curate launcher end to end on synthetic sources + the tiny model, its config checks and the kfp signature."""

from __future__ import annotations

import inspect
import json

import pytest

from components.common.lineage import read_lineage
from components.common.records import load_records
from components.curate.__main__ import main, make_parser
from components.curate.config import OUTPUTS, CurateConfig

FLAGS = "pneumoniamnist,organamnist,chestmnist,dermamnist"


@pytest.fixture(scope="module")
def label_cache(tmp_path_factory):
    # shared by the launcher runs: the second run finds every label cached and never opens the model
    return tmp_path_factory.mktemp("labels") / "cache.jsonl"


def _argv(medmnist_all, pmc_root, model, out, cache, **over):
    args = {"medmnist-root": str(medmnist_all), "pmc-vqa-root": str(pmc_root), "flags": FLAGS, "seed": "0",
            "rl-size": "16", "include-none": "false", "labeller-model": str(model), "diag-per-class": "2",
            "eval-per-class": "1", "sft-per-class": "3", "label-cache": str(cache), "target-diag-per-modality": "2",
            **over}
    argv = [x for k, v in args.items() for x in (f"--{k}", v)]
    return argv + [x for name in OUTPUTS for x in (f"--out-{name.replace('_', '-')}", str(out / name))]


def _benchmark_with_a_training_question(pmc_root, root):
    """Synthetic benchmarks whose PMC-VQA test set holds a copy of one training question (image and text)."""
    import csv
    import shutil

    from components.evaluate.synthetic import write_synthetic_benchmarks

    write_synthetic_benchmarks(root, ["pmc-vqa", "vqa-rad"], n=6)
    train = next(csv.DictReader((pmc_root / "train.csv").open()))
    shutil.copyfile(pmc_root / "images" / train["Figure_path"], root / "pmc-vqa" / "images" / train["Figure_path"])
    path = root / "pmc-vqa" / "test_clean.csv"
    rows = list(csv.DictReader(path.open()))
    rows[0].update({k: train[k] for k in ("Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C",
                                          "Choice D", "Answer_label")})
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root, train


def test_main_writes_all_outputs_with_lineage(medmnist_all, pmc_root, tiny_model_dir, label_cache, tmp_path, capsys):
    bench, leaked = _benchmark_with_a_training_question(pmc_root, tmp_path / "bench")
    argv = _argv(medmnist_all, pmc_root, tiny_model_dir, tmp_path, label_cache, **{"benchmarks-root": str(bench),
                                                                                    "benchmarks": "pmc-vqa,vqa-rad"})
    assert main(argv) == 0
    for name in OUTPUTS:
        lin = read_lineage(tmp_path / name)
        assert lin["step"] == "curate" and lin["artifact"] == name and lin["synthetic"] is True
        assert lin["params"]["rl_size"] == 16
    diag = load_records(tmp_path / "diag_set")
    assert {r.split for r in diag} == {"val"} and len(diag) == 2 * (2 + 11 + 14 + 7)
    assert len(load_records(tmp_path / "eval_set")) == 2 + 11 + 14 + 7
    assert {r.split for r in load_records(tmp_path / "sft_set")} == {"train"}
    rl = load_records(tmp_path / "rl_set")
    assert len(rl) == 16 and all(r.source == "pmc-vqa" and r.meta["modality_prompt_version"] == "modality-v1" for r in rl)
    # the held-out diagnosis slice: at most 2 per modality, 'none' left out, no image or question shared with rl_set
    held = load_records(tmp_path / "rl_diag_set")
    per_mod = {m: sum(r.modality == m for r in held) for m in {r.modality for r in held}}
    assert held and max(per_mod.values()) <= 2 and "none" not in per_mod
    assert not {r.image for r in held} & {r.image for r in rl} and not {r.id for r in held} & {r.id for r in rl}
    # the training question copied into the benchmark is removed from the pool and counted
    assert leaked["Question"] not in {r.question for r in rl if r.image.endswith(leaked["Figure_path"])}
    cont = json.loads((tmp_path / "curation_report" / "contamination.json").read_text())
    assert cont["rl_set"]["by_source"]["benchmark pmc-vqa"] >= 1
    assert not any(r.image.endswith(leaked["Figure_path"]) for r in held)  # the slice holds no benchmark question
    assert set(cont["evaluation_sets"]) == {"benchmark pmc-vqa", "benchmark vqa-rad", "rl_diag_set", "diag_set", "eval_set"}
    assert cont["sft_set"]["checked"] == 102 and "Contamination" in (tmp_path / "curation_report" / "report.md").read_text()
    tasks = json.loads((tmp_path / "medmnist_data" / "tasks.json").read_text())["tasks"]
    assert set(tasks) == set(FLAGS.split(",")) and (tmp_path / "medmnist_data" / "chestmnist.npz").is_file()
    rep = tmp_path / "curation_report"
    for f in ("validation/diag_set.json", "validation/rl_set.json", "quarantine.jsonl", "cards/rl_set.md",
              "rl_counts.md", "rl_counts.png", "balance.json", "labels.jsonl", "report.md"):
        assert (rep / f).is_file(), f
    assert json.loads((rep / "validation" / "rl_set.json").read_text())["success"] is True
    assert "SYNTHETIC DATA" in (tmp_path / "sft_set" / "card.md").read_text()
    assert len((rep / "labels.jsonl").read_text().splitlines()) == 40
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.index("{"):])["counts"] == {
        "rl_diag_set": len(held), "diag_set": 68, "eval_set": 34, "sft_set": 102, "rl_set": 16}


def test_config_errors_name_the_value_and_the_flag():
    with pytest.raises(ValueError, match=r"size=30 .*\(--size\)"):
        CurateConfig(size=30)
    with pytest.raises(ValueError, match=r"rl_size=0 must be >= 1 \(--rl-size\)"):
        CurateConfig(rl_size=0)
    with pytest.raises(ValueError, match="flags='bogusmnist'"):
        CurateConfig(flags="bogusmnist")


def test_launcher_rejects_bad_config_with_status_2(tmp_path, capsys):
    argv = ["--medmnist-root", "a", "--pmc-vqa-root", "b", "--rl-size", "0"]
    argv += [x for name in OUTPUTS for x in (f"--out-{name.replace('_', '-')}", str(tmp_path / name))]
    assert main(argv) == 2
    assert "rl_size=0" in capsys.readouterr().err
    cfg, io = make_parser().parse(argv[:4] + argv[6:])
    assert cfg.include_none is False and io.out("rl_set") == tmp_path / "rl_set"


def test_component_signature_matches_the_pipeline_interface():
    from components.curate.component import curate

    sig = inspect.signature(curate.python_func)
    assert list(sig.parameters) == [
        "medmnist_root", "pmc_vqa_root", "flags", "seed", "rl_size", "include_none", "labeller_model",
        "diag_per_class", "eval_per_class", "sft_per_class", "target_diag_per_modality", "benchmarks_root",
        "benchmarks", "medmnist_data", "diag_set", "eval_set", "sft_set", "rl_set", "rl_diag_set", "curation_report",
        "cache_fingerprint",  # components/fingerprint: part of KFP's cache key only
    ]
    outs = curate.component_spec.outputs
    assert {k: v.type for k, v in outs.items()} == {
        "medmnist_data": "system.Dataset@0.0.1", "diag_set": "system.Dataset@0.0.1", "eval_set": "system.Dataset@0.0.1",
        "sft_set": "system.Dataset@0.0.1", "rl_set": "system.Dataset@0.0.1", "rl_diag_set": "system.Dataset@0.0.1",
        "curation_report": "system.Artifact@0.0.1",
    }


def test_failing_validation_stops_the_step_but_writes_the_report(medmnist_all, pmc_root, tiny_model_dir, label_cache, tmp_path, capsys):
    # 28 px MedMNIST images are below a 29 px minimum side; the 64 px PMC-VQA images are not
    argv = _argv(medmnist_all, pmc_root, tiny_model_dir, tmp_path, label_cache, flags="pneumoniamnist", **{"image-min-side": "29"})
    assert main(argv) == 2  # the step fails (the kfp component raises on a non-zero exit) with the message below
    msg = capsys.readouterr().err
    assert "dataset 'diag_set' failed validation" in msg and "dataset 'sft_set' failed validation" in msg
    assert "expect_column_values_to_be_between" in msg and "row 0 (id 'pneumoniamnist-val-" in msg
    assert not (tmp_path / "diag_set").exists()  # a dataset that fails never appears
    assert (tmp_path / "rl_set" / "records.jsonl").is_file()
    rep = tmp_path / "curation_report"
    assert json.loads((rep / "validation" / "diag_set.json").read_text())["success"] is False
    assert "Validation failures" in (rep / "report.md").read_text()


def test_s3_roots_are_mirrored_through_storage(monkeypatch, tmp_path):
    import components.common.storage as storage

    calls = []
    monkeypatch.setattr(storage, "download_prefix", lambda uri, cache: calls.append((uri, cache)) or tmp_path)
    assert storage.local_dir("s3://bucket/medmnist", tmp_path / "cache") == tmp_path
    assert calls == [("s3://bucket/medmnist", tmp_path / "cache")]
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        storage.local_dir(str(tmp_path / "nope"), tmp_path)


def test_missing_source_root_is_a_clean_error(pmc_root, tiny_model_dir, label_cache, tmp_path, capsys):
    argv = _argv(tmp_path / "no-medmnist", pmc_root, tiny_model_dir, tmp_path, label_cache, flags="pneumoniamnist")
    assert main(argv) == 2
    assert "no-medmnist' is not a directory" in capsys.readouterr().err
