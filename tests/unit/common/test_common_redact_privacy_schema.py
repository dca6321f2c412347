"""Pure rules: what credentials redaction replaces, what the privacy flag keeps of a dump row, which schema versions a
reader accepts."""

from __future__ import annotations

import pytest

from components.common.privacy import env_private, private_report, private_row
from components.common.redact import REDACTED, is_secret_key, redact, redact_text, secret_values
from components.common.schema import CURRENT, check, stamp

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY"


@pytest.mark.parametrize(
    "text, expected",
    [
        (f"key {SECRET} here", f"key {REDACTED} here"),  # a credential the environment holds, anywhere in a string
        ("https://user:p4ss@hub.example.org/x", f"https://{REDACTED}@hub.example.org/x"),  # URL user-info
        ("s3://bucket/key", "s3://bucket/key"),  # an ordinary URI is left alone
        ("https://h/o?X-Amz-Signature=abc123&x=1", f"https://h/o?X-Amz-Signature={REDACTED}&x=1"),  # presigned URL
        ("https://hooks.example/x?token=t0k3n", f"https://hooks.example/x?token={REDACTED}"),  # a token parameter
        ("Pass@16 is 0.75, max_new_tokens=256", "Pass@16 is 0.75, max_new_tokens=256"),  # no credential: unchanged
    ],
)
def test_redact_text(text, expected):
    assert redact_text(text, [SECRET]) == expected


@pytest.mark.parametrize(
    "name, secret",
    [
        ("hf_token", True),  # the hub token field
        ("AWS_SECRET_ACCESS_KEY", True),  # an env-style name
        ("password", True),
        ("webhook_url", True),  # a webhook URL carries its token
        ("max_new_tokens", False),  # 'tokens' of generation, not a credential
        ("tokenizer", False),
        ("key_id", False),  # the public name of a signing key
        ("secretariat", False),  # a word that merely starts like one
    ],
)
def test_secret_key_names(name, secret):
    assert is_secret_key(name) is secret


def test_redact_walks_json_and_reads_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    key_file = tmp_path / "key"
    key_file.write_text("lineage-signing-key-123\n")
    monkeypatch.setenv("MEDBRIDGE_LINEAGE_KEY_FILE", str(key_file))
    assert SECRET in secret_values() and "lineage-signing-key-123" in secret_values()
    doc = {"hf_token": "anything", "judge": f"model?x={SECRET}", "nested": [{"note": "lineage-signing-key-123"}],
           "k": 16, "empty_token": ""}
    assert redact(doc) == {"hf_token": REDACTED, "judge": f"model?x={REDACTED}", "nested": [{"note": REDACTED}],
                           "k": 16, "empty_token": ""}


def test_short_values_are_not_treated_as_secrets(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ab")  # would otherwise redact every "ab" in a report
    assert "ab" not in secret_values()


@pytest.mark.parametrize(
    "row, kept",
    [
        # diagnose's samples.jsonl: completions go, letters and correctness stay
        ({"id": "q1", "task": "t", "answer": "B", "greedy": {"completion": "<answer>B</answer>", "letter": "B", "correct": True},
          "samples": [{"completion": "it is A", "letter": "A", "correct": False}]},
         {"id": "q1", "task": "t", "answer": "B", "greedy": {"letter": "B", "correct": True},
          "samples": [{"letter": "A", "correct": False}]}),
        # evaluate's rows: completions as bare strings
        ({"set": "vqa-rad", "id": "x", "greedy": "text", "greedy_letter": "A", "samples": ["a", "b"],
          "sample_letters": ["A", None], "n_correct": 1},
         {"set": "vqa-rad", "id": "x", "greedy_letter": "A", "sample_letters": ["A", None], "n_correct": 1}),
        # question, options and images never stay
        ({"id": "r", "question": "Which organ?", "options": ["liver", "spleen"], "image": "images/0.png"}, {"id": "r"}),
    ],
)
def test_private_row(row, kept):
    assert private_row(row) == kept


def test_private_flag_from_environment_and_report(monkeypatch):
    monkeypatch.setenv("MEDBRIDGE_PRIVATE", "1")
    assert env_private()
    monkeypatch.setenv("MEDBRIDGE_PRIVATE", "0")
    assert not env_private()
    ctx = private_report({"curation": {"images": [{"src": "data:image/png;base64,x"}], "tables": [1]}})
    assert ctx["curation"] == {"images": [], "tables": [1]} and ctx["private"]


@pytest.mark.parametrize(
    "doc, ok",
    [
        ({"k": 16}, True),  # written before versions were recorded: version 1
        ({"schema_version": 1}, True),
        ({"schema_version": 99}, False),  # a newer MedBridge wrote it
        ({"schema_version": "1"}, False),  # not an integer
        ({"schema_version": True}, False),  # a bool is no version
    ],
)
def test_schema_check(doc, ok):
    if ok:
        assert check(doc, "diagnosis", "d.json") == 1
    else:
        with pytest.raises(ValueError, match=r"d.json: unknown diagnosis schema version"):
            check(doc, "diagnosis", "d.json")


def test_stamp_sets_the_current_version_first():
    doc = stamp({"a": 1, "schema_version": 0}, "lineage")
    assert list(doc)[0] == "schema_version" and doc["schema_version"] == CURRENT["lineage"] == 2
