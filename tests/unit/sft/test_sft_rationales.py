"""Bridge targets: answer-only for direct, teacher-written rationales for think / scaffold. The extraction rule is
table-driven; the teacher (the tiny model) writes through a cache that an interrupted run resumes; a think-format
bridge trains on them through the launcher and records the teacher in its lineage."""

from __future__ import annotations

import json

import pytest

from components.common.records import MCQRecord
from components.sft.rationales import extract_rationale, sft_target, teacher_messages

REC = MCQRecord(id="q1", question="Which finding?", options=["normal", "pneumonia", "effusion"], answer="B",
                image="images/x.png", task="pmc-vqa", modality="X-ray")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>Patchy opacity in the right lower lobe.</think><answer>B</answer>",
         "Patchy opacity in the right lower lobe."),  # the canonical shape: the inside of <think>
        ("<think> a\n b </think><answer>pneumonia</answer>", "a\n b"),  # the option text counts as its letter
        ("Consolidation is visible. <answer>B</answer>", "Consolidation is visible."),  # no <think>: text minus answer
        ("Consolidation is visible.", "Consolidation is visible."),  # no tags at all: the text is the reasoning
        ("<think>Clear lungs.</think><answer>A</answer>", None),  # it argued for another option: rejected
        ("<think></think><answer>B</answer>", None),  # nothing to learn from
        ("<answer>B</answer>", None),  # the answer alone is not a rationale
        ("   \n ", None),  # empty
        ("<think>First </think> stray </think><answer>B</answer>", "First"),  # first block only, stray tags dropped
    ],
)
def test_extract_rationale(text, expected):
    assert extract_rationale(text, REC) == expected


@pytest.mark.parametrize(
    "fmt, rationale, expected",
    [
        ("direct", None, "<answer>B</answer>"),  # answer-only: the direct format's shape
        ("direct", "ignored", "<answer>B</answer>"),
        ("think", "Opacity.", "<think>Opacity.</think><answer>B</answer>"),
        ("scaffold", "1) CXR ...", "<think>1) CXR ...</think><answer>B</answer>"),
    ],
)
def test_sft_target(fmt, rationale, expected):
    assert sft_target(REC, fmt, rationale) == expected


def test_sft_target_needs_a_rationale_to_think():
    with pytest.raises(ValueError, match="needs a rationale"):
        sft_target(REC, "think", None)


def test_teacher_sees_the_students_prompt_and_the_answer():
    text = teacher_messages(REC, "scaffold")[0]["content"][1]["text"]
    assert "1) image type and view" in text  # the scaffold the student will see
    assert "The correct answer is B. pneumonia." in text and "following the numbered steps" in text
    assert teacher_messages(REC, "think")[0]["content"][0] == {"type": "image"}


def test_rationales_are_cached_and_an_interrupted_run_resumes(monkeypatch, tiny_model_dir, mcq_dir, tmp_path):
    from components.common.records import load_records
    from components.common.sampling import TransformersBackend
    from components.sft.rationales import write_rationales

    records = load_records(mcq_dir)[:6]
    cache = tmp_path / "rationales"
    real_sample = TransformersBackend.sample
    calls = {"n": 0}

    def interrupted(self, prompts, n):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the pod is stopped while the teacher writes the second batch
        return real_sample(self, prompts, n)

    monkeypatch.setattr(TransformersBackend, "sample", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_rationales(records, mcq_dir, str(tiny_model_dir), cache, fmt="think", max_new_tokens=12, batch_size=2)
    rows = [json.loads(line) for f in cache.glob("*.jsonl") for line in f.read_text().splitlines()]
    assert len(rows) == 2 and {r["record_id"] for r in rows} == {records[0].id, records[1].id}  # the first batch kept

    monkeypatch.setattr(TransformersBackend, "sample", real_sample)
    table = write_rationales(records, mcq_dir, str(tiny_model_dir), cache, fmt="think", max_new_tokens=12,
                             batch_size=2)
    assert table.stats["cached"] == 2 and table.stats["generated"] == 4  # only what was missing
    assert set(table.rationales) == {r.id for r in records}
    again = write_rationales(records, mcq_dir, str(tiny_model_dir), cache, fmt="think", max_new_tokens=12,
                             batch_size=2)
    assert again.stats["generated"] == 0 and again.rationales == table.rationales
    # Another format or teacher setting is another key: the think rationales are not reused for scaffold.
    other = write_rationales(records[:2], mcq_dir, str(tiny_model_dir), cache, fmt="scaffold", max_new_tokens=12)
    assert other.stats["generated"] == 2


def test_think_bridge_trains_on_teacher_rationales(tiny_model_dir, mcq_dir, bridge_diagnosis, tmp_path):
    from components.common.lineage import read_lineage
    from components.sft.__main__ import main

    out = tmp_path / "sft"
    rc = main([
        "--model", str(tiny_model_dir), "--sft-set", str(mcq_dir), "--diagnosis", str(bridge_diagnosis),
        "--out", str(out), "--teacher-model", str(tiny_model_dir), "--rationale-cache", str(tmp_path / "cache"),
        "--prompt-format", "think", "--max-steps", "2", "--per-device-batch-size", "2", "--max-examples", "4",
        "--teacher-max-new-tokens", "12", "--learning-rate", "1e-3", "--tune-vision", "true",
    ])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    t = metrics["targets"]
    assert t["source"] == "teacher" and t["teacher"] == str(tiny_model_dir) and t["generated"] == 4
    assert metrics["n_examples"] == 4 - t["rejected"] and metrics["tune_vision"] is True
    assert read_lineage(out)["inputs"]["teacher_model"]["ref"] == str(tiny_model_dir)


def test_think_without_a_teacher_fails_before_any_model_loads(monkeypatch, mcq_dir, bridge_diagnosis, tmp_path,
                                                               capsys):
    import components.common.modeling as modeling
    from components.sft.__main__ import main

    monkeypatch.setattr(modeling, "load_model_and_processor", lambda *a, **k: pytest.fail("a model was loaded"))
    rc = main(["--model", "m", "--sft-set", str(mcq_dir), "--diagnosis", str(bridge_diagnosis),
               "--out", str(tmp_path / "o"), "--prompt-format", "think"])
    assert rc == 2
    assert "pass --teacher-model" in capsys.readouterr().err
