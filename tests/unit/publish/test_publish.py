"""The publish step against a real S3 server (tests/conftest.py `s3`): what lands under the prefix, in what order,
the model card's content, and the launcher's refusals."""

from __future__ import annotations

import json
import shutil

import pytest

from components.common.io import sha256_file, write_json
from components.common.lineage import read_lineage, write_lineage
from components.publish.__main__ import main
from components.publish.card import fmt_ci


def _outcomes(n: int, correct: int, k: int = 4):
    from components.evaluate.scoring import QuestionOutcome

    return [
        QuestionOutcome(id=f"q{i}", task="pmc-vqa", group="none", answer="A", n_options=4,
                        greedy_letter="A" if i < correct else "B", greedy_correct=i < correct,
                        sample_letters=["A" if i < correct + 2 else "B"] * k, sample_correct=[i < correct + 2] * k)
        for i in range(n)
    ]


@pytest.fixture
def run_dir(tmp_path, tiny_model_dir):
    """Artifacts as the pipeline hands them to publish: curate -> diagnose -> grpo model -> evaluate results."""
    from components.evaluate.scoring import aggregate, paired_delta

    root = tmp_path / "run"
    rl_set = root / "rl_set"
    rl_set.mkdir(parents=True)
    (rl_set / "records.jsonl").write_text('{"id": "1"}\n')
    write_lineage(rl_set, step="curate", artifact="rl_set", inputs={"base": tiny_model_dir}, summary="24 modality-balanced PMC-VQA questions")
    cur = root / "curation_report"
    (cur / "cards").mkdir(parents=True)
    (cur / "cards" / "rl_set.md").write_text("# rl_set\nBalanced across modalities.\n")
    write_lineage(cur, step="curate", artifact="curation_report", summary="curation report")
    dia = root / "diagnosis"
    dia.mkdir()
    write_json(dia / "diagnosis.json", {
        "k": 4, "tau": 0.5, "model_ref": "Qwen/Qwen2.5-VL-7B-Instruct",
        "overall": {"acc_at_1": 0.3, "pass_at_k": {"4": 0.62}, "ci": {"acc_at_1": [0.2, 0.4], "pass_at_k": [0.55, 0.7]}},
        "decision": {"branch": "sharpen", "rule": "Pass@4 interval [0.55, 0.70] is at least tau=0.5: sharpen", "forced": False},
    })
    write_lineage(dia, step="diagnose", artifact="diagnosis", inputs={"rl_set": rl_set}, summary="sharpen")
    model = root / "model"
    shutil.copytree(tiny_model_dir, model, ignore=shutil.ignore_patterns("lineage.json"))
    (model / "training_log.jsonl").write_text('{"step": 20, "loss": 0.5}\n')  # trained: not the base's content
    write_lineage(model, step="grpo", artifact="model", inputs={"init": tiny_model_dir, "rl_set": rl_set, "diagnosis": dia},
                  params={"max_steps": 20, "learning_rate": 5e-7, "lora": True, "num_generations": 8}, summary="GRPO 20 steps")
    base, trained = _outcomes(40, 12), _outcomes(40, 20)
    results = root / "results"
    results.mkdir()
    entry = {"base": aggregate(base, 4, 200, 0), "trained": aggregate(trained, 4, 200, 0), "delta": paired_delta(base, trained, 4, 200, 0)}
    write_json(results / "results.json", {
        "k": 4, "prompt_format": "think", "sampling": {"temperature": 0.7, "top_p": 0.9}, "train_task": "pmc-vqa",
        "benchmarks": {"pmc-vqa": entry}, "transfer": {"regimes": {"cross-modality": entry}},
        "overfit": {"flags": []}, "models": {"base": "Qwen/Qwen2.5-VL-7B-Instruct", "trained": str(model)},
    })
    (results / "samples.jsonl").write_text('{"id": "q0"}\n')
    write_lineage(results, step="evaluate", artifact="results", inputs={"model": model, "diagnosis": dia}, summary="scored")
    report = root / "report.html"
    report.write_text("<html><body>report</body></html>")
    return {"model": model, "results": results, "report": report, "diagnosis": dia, "curation_report": cur,
            "entry": entry}


def _argv(d, out, uri=""):
    return ["--model", str(d["model"]), "--results", str(d["results"]), "--report", str(d["report"]),
            "--diagnosis", str(d["diagnosis"]), "--curation-report", str(d["curation_report"]),
            "--publish-uri", uri, "--out", str(out)]


def _keys(client, bucket, prefix):
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"][len(prefix):]: o for page in pages for o in page.get("Contents", [])}


def test_publishes_model_report_lineage_and_card(s3, run_dir, tmp_path, monkeypatch):
    client, bucket = s3
    order = []
    real_upload = type(client).upload_file

    def spy(self, filename, b, key, **kw):
        order.append(key)
        return real_upload(self, filename, b, key, **kw)

    monkeypatch.setattr(type(client), "upload_file", spy)  # records the order the real uploads happen in
    monkeypatch.setattr("components.common.storage.s3_client", lambda endpoint=None: client)
    out = tmp_path / "published"
    assert main(_argv(run_dir, out, f"s3://{bucket}/published")) == 0

    sha = read_lineage(run_dir["model"])["sha256"]
    prefix = f"published/medbridge-{sha[:12]}/"
    keys = _keys(client, bucket, prefix)
    # The model byte for byte, with its lineage; results, report, dataset cards, card, manifest, lineage.
    for path in run_dir["model"].rglob("*"):
        if path.is_file():
            rel = f"model/{path.relative_to(run_dir['model']).as_posix()}"
            body = client.get_object(Bucket=bucket, Key=prefix + rel)["Body"].read()
            assert body == path.read_bytes(), rel
    assert {"results/results.json", "results/samples.jsonl", "results/lineage.json", "report.html",
            "data_cards/rl_set.md", "MODEL_CARD.md", "published.json", "lineage.json"} <= set(keys)
    # The manifest lists every file with its hash; what is on the server matches it.
    manifest = json.loads(client.get_object(Bucket=bucket, Key=prefix + "published.json")["Body"].read())
    assert manifest["model_sha256"] == sha and manifest["uri"] == f"s3://{bucket}/{prefix.rstrip('/')}"
    assert manifest["files"]["model/config.json"]["sha256"] == sha256_file(run_dir["model"] / "config.json")
    assert set(manifest["files"]) == set(keys) - {"published.json", "lineage.json"}
    # Order: each folder's config.json / lineage.json after its other files, the root lineage.json last of all.
    rel = [k[len(prefix):] for k in order]
    assert rel[-1] == "lineage.json"
    assert rel.index("model/config.json") > rel.index("model/model.safetensors")
    assert rel.index("model/lineage.json") > rel.index("model/config.json")
    # The publication's own lineage chains back through evaluate and grpo to curate, and is synthetic (tiny model).
    lineage = json.loads(client.get_object(Bucket=bucket, Key=prefix + "lineage.json")["Body"].read())
    assert lineage["step"] == "publish" and lineage["synthetic"] is True
    assert {"evaluate", "grpo", "curate", "diagnose"} <= {h["step"] for h in lineage["history"]}
    # The local output holds the same card, manifest and lineage.
    assert (out / "MODEL_CARD.md").read_bytes() == client.get_object(Bucket=bucket, Key=prefix + "MODEL_CARD.md")["Body"].read()


def test_model_card_says_intended_use_training_data_and_metrics_with_intervals(s3, run_dir, tmp_path):
    _, bucket = s3
    out = tmp_path / "published"
    assert main(_argv(run_dir, out, f"s3://{bucket}/p")) == 0
    card = (out / "MODEL_CARD.md").read_text()
    assert "**Research use only. Not for clinical use.**" in card
    assert "SYNTHETIC" in card  # built on the random-weight tiny model
    assert "## Training data" in card and "24 modality-balanced PMC-VQA questions" in card and "data_cards/rl_set.md" in card
    assert "Branch: **sharpen**" in card and "Pass@4 interval [0.55, 0.70]" in card
    e = run_dir["entry"]
    # The benchmark row shows trained Acc@1 with its bootstrap interval, and the paired delta with its interval.
    trained = fmt_ci(e["trained"]["acc_at_1"], e["trained"]["ci"]["acc_at_1"])
    delta = fmt_ci(e["delta"]["acc_at_1"]["value"], e["delta"]["acc_at_1"]["ci"], signed=True)
    assert "| pmc-vqa | 40 | " in card and trained in card and delta in card
    assert "[" in trained and delta.startswith("+")
    assert "max_steps=20" in card and "learning_rate=5e-07" in card  # the training settings, from lineage


@pytest.mark.parametrize(
    "value, ci, signed, text",
    [
        (0.4123, [0.35, 0.47], False, "41.2% [35.0, 47.0]"),  # a proportion with its interval, in percent
        (0.05, [-0.01, 0.11], True, "+5.0% [-1.0, 11.0]"),  # a paired delta keeps its sign
        (None, None, False, "n/a"),  # not scored
        (float("nan"), [0.1, 0.2], False, "n/a"),  # NaN (no questions) is not a number to show
        (0.5, [float("nan"), float("nan")], False, "50.0%"),  # an interval that could not be computed is left out
    ],
)
def test_fmt_ci(value, ci, signed, text):
    assert fmt_ci(value, ci, signed=signed) == text


def test_empty_publish_uri_writes_locally_only(s3, run_dir, tmp_path, capsys):
    client, bucket = s3
    out = tmp_path / "published"
    assert main(_argv(run_dir, out)) == 0
    assert {p.name for p in out.iterdir()} == {"MODEL_CARD.md", "published.json", "lineage.json"}
    assert json.loads((out / "published.json").read_text())["uri"] == ""
    assert "not uploaded" in capsys.readouterr().out
    assert _keys(client, bucket, "") == {}


def test_another_model_is_not_written_over_a_publication(s3, run_dir, tmp_path, capsys):
    client, bucket = s3
    uri = f"s3://{bucket}/p"
    assert main(_argv(run_dir, tmp_path / "a", uri) + ["--name", "fixed"]) == 0
    assert main(_argv(run_dir, tmp_path / "b", uri) + ["--name", "fixed"]) == 0  # same model again: a retry, fine
    (run_dir["model"] / "extra.txt").write_text("changed weights")
    write_lineage(run_dir["model"], step="grpo", artifact="model", summary="another model")
    assert main(_argv(run_dir, tmp_path / "c", uri) + ["--name", "fixed"]) == 2
    assert "already holds another model" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()  # nothing half-written locally
    assert main(_argv(run_dir, tmp_path / "c", uri) + ["--name", "fixed", "--overwrite"]) == 0


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: (d["model"] / "lineage.json").unlink(), "no lineage.json"),  # a model without provenance
        (lambda d: (d["results"] / "results.json").unlink(), "no results.json"),
        (lambda d: d["report"].unlink(), "no such report file"),
    ],
)
def test_bad_inputs_are_one_line_errors(run_dir, tmp_path, capsys, change, message):
    change(run_dir)
    assert main(_argv(run_dir, tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m components.publish: error:") and message in err and "\n" not in err


def test_publish_uri_must_be_s3(run_dir, tmp_path, capsys):
    assert main(_argv(run_dir, tmp_path / "out", "/mnt/models")) == 2
    assert "must be an s3:// URI" in capsys.readouterr().err


def test_unreachable_bucket_is_named(s3, run_dir, tmp_path, capsys):
    assert main(_argv(run_dir, tmp_path / "out", "s3://no-such-bucket-here/p")) == 2
    err = capsys.readouterr().err
    assert "no-such-bucket-here" in err and "NoSuchBucket" in err
