"""`python -m components.probe` end to end on MedMNIST-format npz files and the tiny checkpoint."""

from __future__ import annotations

import inspect
import json

import pytest

from components.probe.__main__ import main
from components.probe.config import ProbeConfig

FLAGS = "pneumoniamnist,bloodmnist,chestmnist"


def _argv(model, data, out, cache, *extra):
    return ["--model", str(model), "--data", str(data), "--flags", FLAGS, "--image-size", "56", "--epochs", "5",
            "--batch-size", "16", "--seed", "0", "--device", "cpu", "--cache-dir", str(cache), "--out", str(out),
            *extra]


def test_launcher_end_to_end_and_cache_reuse(tiny_model_dir, tmp_path, npz_writer, monkeypatch):
    data = tmp_path / "medmnist_data"
    for i, flag in enumerate(FLAGS.split(",")):
        npz_writer(data, flag, n_per_class=4, seed=i)
    out, cache = tmp_path / "probe_report", tmp_path / "cache"
    assert main(_argv(tiny_model_dir, data, out, cache, "--metrics-json", str(tmp_path / "m.json"))) == 0

    assert {p.name for p in out.iterdir()} == {"probe.json", "table.md", "probe_accuracy.png", "metrics.json", "lineage.json"}
    probe = json.loads((out / "probe.json").read_text())
    assert set(probe["tasks"]) == set(FLAGS.split(","))
    assert probe["synthetic"] is True and probe["pooling"] == "mean" and probe["tower_path"] == "fast"
    blood = probe["tasks"]["bloodmnist"]
    assert (blood["group"], blood["n_train"], blood["n_test"]) == ("microscopy", 32, 32)  # 8 classes x 4
    assert 0 <= probe["tasks"]["chestmnist"]["auc"] <= 100  # multi-label path: mean AUC over findings
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics == json.loads((out / "metrics.json").read_text())
    assert metrics["n_tasks"] == 3.0 and metrics["n_perception_limited"] == sum(
        v["perception_limited"] for v in probe["tasks"].values())
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["step"] == "probe" and lineage["synthetic"] is True and lineage["params"]["image_size"] == 56
    assert "## radiology" in (out / "table.md").read_text()

    # Same checkpoint, same data: every split comes from the cache and the checkpoint is never opened.
    from components.probe import features

    def no_load(self):
        raise AssertionError("model loaded although every split is cached")

    monkeypatch.setattr(features.FeatureExtractor, "load", no_load)
    out2 = tmp_path / "probe_report2"
    assert main(_argv(tiny_model_dir, data, out2, cache)) == 0
    probe2 = json.loads((out2 / "probe.json").read_text())
    assert probe2["tower_path"] == "cached"
    assert all(probe2["features"][f][s]["cache_hit"] for f in FLAGS.split(",") for s in ("train", "test"))
    assert probe2["tasks"] == probe["tasks"]  # seeded probe on identical features


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--pooling", "median"], "pooling='median'"),  # not mean / max
        (["--image-size", "100"], "multiple of 28"),  # the Qwen patch grid needs 28-px multiples
        (["--flags", "mnist"], "unknown MedMNIST task"),  # not one of the 12 2D tasks
    ],
)
def test_launcher_rejects_bad_config(tmp_path, capsys, extra, message):
    argv = ["--model", "m", "--data", str(tmp_path), "--out", str(tmp_path / "o"), *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_launcher_names_missing_npz(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(_argv(tiny_model_dir, tmp_path / "empty", tmp_path / "o", tmp_path / "c")) == 2
    assert str(tmp_path / "empty" / "pneumoniamnist.npz") in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_config_help_on_every_field():
    import dataclasses

    assert all(f.metadata.get("help") for f in dataclasses.fields(ProbeConfig))


def test_component_signature_matches_interfaces():
    pytest.importorskip("kfp", reason="the component spec needs the kfp SDK (absent on bare GPU test machines)")
    from components.probe.component import probe

    sig = inspect.signature(probe.python_func)
    assert list(sig.parameters) == ["model_ref", "medmnist_data", "flags", "pooling", "epochs", "image_size",
                                    "batch_size", "seed", "probe_report", "metrics",
                                    "cache_fingerprint"]  # components/fingerprint: part of KFP's cache key only
    src = inspect.getsource(probe.python_func)
    assert "from components.probe.__main__ import main" in src and "log_metric" in src
