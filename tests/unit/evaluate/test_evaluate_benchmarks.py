"""Benchmarks as data: every YAML loads, maps its synthetic copy (public layout) to valid MCQ records, and the
closed-form filter keeps exactly the questions it should."""

from __future__ import annotations

import json

import pytest

from components.common.records import load_records
from components.evaluate.benchmark import (
    BENCHMARKS,
    DEFAULT_BENCHMARKS,
    load_registry,
    parse_benchmarks,
    prepare_benchmark,
)
from components.evaluate.hooks import HOOKS
from components.evaluate.synthetic import MEDICAL_SUBJECTS, write_synthetic_benchmarks


@pytest.fixture(scope="module")
def bench_root(tmp_path_factory):
    return write_synthetic_benchmarks(tmp_path_factory.mktemp("benchmarks"), n=24, seed=3)


def test_registry_holds_the_six_benchmarks():
    assert set(load_registry()) == set(DEFAULT_BENCHMARKS) == set(BENCHMARKS)
    assert parse_benchmarks("all") == list(DEFAULT_BENCHMARKS)
    assert parse_benchmarks("none") == []
    with pytest.raises(ValueError, match="not known"):
        parse_benchmarks("vqa-rad,chexpert")


@pytest.mark.parametrize("name", DEFAULT_BENCHMARKS)
def test_synthetic_copy_maps_to_valid_records(bench_root, tmp_path, name):
    records, stats = prepare_benchmark(BENCHMARKS[name], bench_root, tmp_path / name)
    assert records and stats.used == stats.kept == len(records)
    assert stats.rows == 24 and stats.kept + sum(stats.excluded.values()) == 24
    reloaded = load_records(tmp_path / name)  # validates every row and checks the images exist
    assert [r.id for r in reloaded] == [r.id for r in records]
    assert all(r.task == name for r in reloaded)


def _raw_rows(bench_root, name):
    """The synthetic files read independently of the loader (pyarrow/json/csv directly)."""
    import csv

    import pyarrow.parquet as pq

    folder = bench_root / BENCHMARKS[name].dir
    if name in ("vqa-rad", "pathvqa"):
        return [r for p in sorted((folder / "data").glob("test-*.parquet")) for r in pq.read_table(p).to_pylist()]
    if name == "mmmu-med":
        return [r for p in sorted(folder.glob("*/validation-*.parquet")) for r in pq.read_table(p).to_pylist()]
    if name == "slake":
        return json.loads((folder / "test.json").read_text())
    if name == "medxpertqa-mm":
        return [json.loads(x) for x in (folder / "MM" / "test.jsonl").read_text().splitlines()]
    return list(csv.DictReader((folder / "test_clean.csv").open()))


def test_yes_no_benchmarks_keep_closed_questions_as_two_options(bench_root, tmp_path):
    for name in ("vqa-rad", "pathvqa"):
        raw = _raw_rows(bench_root, name)
        want = sum(r["answer"].strip().lower() in ("yes", "no") for r in raw)
        records, stats = prepare_benchmark(BENCHMARKS[name], bench_root, tmp_path / name)
        assert 0 < want < len(raw)  # the copy holds open questions too
        assert len(records) == want and stats.excluded == {"open question (answer is not yes/no)": len(raw) - want}
        for r in records:
            assert r.options == ["yes", "no"]
        # answers line up with the raw rows (A = yes, B = no)
        closed = [r for r in raw if r["answer"].strip().lower() in ("yes", "no")]
        assert [r.answer for r in records] == ["A" if c["answer"].lower() == "yes" else "B" for c in closed]


def test_slake_keeps_english_closed_yes_no_only(bench_root, tmp_path):
    raw = _raw_rows(bench_root, "slake")
    want = [
        r for r in raw if r["q_lang"] == "en" and r["answer_type"] == "CLOSED" and r["answer"].lower() in ("yes", "no")
    ]
    assert any(r["q_lang"] == "zh" for r in raw)
    records, _ = prepare_benchmark(BENCHMARKS["slake"], bench_root, tmp_path / "slake")
    assert [r.id for r in records] == [f"slake-{r['qid']}" for r in want]
    assert all(r.question.isascii() for r in records)  # no Chinese question slipped through
    assert {r.modality for r in records} <= {"CT", "MRI", "X-ray"}  # SLAKE's modality column is mapped


def test_mmmu_keeps_medical_single_image_multiple_choice(bench_root, tmp_path):
    raw = _raw_rows(bench_root, "mmmu-med")
    subject = lambda r: r["id"].split("_", 1)[1].rsplit("_", 1)[0]  # noqa: E731
    want = [
        r
        for r in raw
        if subject(r) in MEDICAL_SUBJECTS and r["question_type"] == "multiple-choice" and r["image_2"] is None
    ]
    assert any(subject(r) == "Art" for r in raw)
    records, stats = prepare_benchmark(BENCHMARKS["mmmu-med"], bench_root, tmp_path / "mmmu")
    assert [r.id for r in records] == [f"mmmu-med-{r['id']}" for r in want]
    assert stats.excluded["subject not in the medical set"] == sum(subject(r) == "Art" for r in raw)
    assert all("<image" not in r.question and r.meta["subject"] in MEDICAL_SUBJECTS for r in records)
    assert [len(r.options) for r in records] == [len(eval(w["options"])) for w in want]


def test_medxpertqa_and_pmc_vqa_mapping(bench_root, tmp_path):
    raw = _raw_rows(bench_root, "medxpertqa-mm")
    records, stats = prepare_benchmark(BENCHMARKS["medxpertqa-mm"], bench_root, tmp_path / "mx")
    single = [r for r in raw if len(r["images"]) == 1]
    assert [r.answer for r in records] == [r["label"] for r in single]
    assert stats.excluded == {"more than 1 image(s)": len(raw) - len(single)}
    assert all(len(r.options) == 5 and "Answer Choices" not in r.question for r in records)

    raw = _raw_rows(bench_root, "pmc-vqa")
    records, _ = prepare_benchmark(BENCHMARKS["pmc-vqa"], bench_root, tmp_path / "pmc")
    assert [r.answer for r in records] == [r["Answer_label"] for r in raw]
    assert all(not r.options[0].startswith("A:") for r in records)  # the "A:" prefix is stripped
    assert all(r.answer_text == raw[i]["Answer"] for i, r in enumerate(records))


def test_max_questions_subsamples_deterministically(bench_root, tmp_path):
    a, sa = prepare_benchmark(BENCHMARKS["pmc-vqa"], bench_root, tmp_path / "a", max_questions=5, seed=1)
    b, _ = prepare_benchmark(BENCHMARKS["pmc-vqa"], bench_root, tmp_path / "b", max_questions=5, seed=1)
    assert len(a) == sa.used == 5 and sa.kept == 24
    assert [r.id for r in a] == [r.id for r in b]


def test_missing_benchmark_folder_names_the_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="flaviagiammarino/vqa-rad"):
        prepare_benchmark(BENCHMARKS["vqa-rad"], tmp_path, tmp_path / "out")


# Hooks on hand-written rows in each public schema: (hook, row, expected answer letter / exclusion reason).
HOOK_CASES = [
    # yes/no answer in any case and with a trailing period becomes A/B
    ("vqa-rad", {"image": {"bytes": b"x", "path": None}, "question": "Is there a fracture?", "answer": "Yes."}, "A"),
    ("pathvqa", {"image": {"bytes": b"x", "path": None}, "question": "Is this benign?", "answer": "no"}, "B"),
    # an open answer is left out with its reason
    (
        "vqa-rad",
        {"image": {"bytes": b"x", "path": None}, "question": "Where is the lesion?", "answer": "left lobe"},
        "open question (answer is not yes/no)",
    ),
    # a yes/no question without an image cannot be asked of a VLM
    ("slake", {"img_name": None, "question": "Is it normal?", "answer": "yes"}, "no image"),
    # PMC-VQA version 1 (no Answer_label): the answer text picks the option
    (
        "pmc-vqa",
        {
            "Figure_path": "f.jpg",
            "Question": "q?",
            "Answer": "MRI",
            "Choice A": "A:CT",
            "Choice B": "B:MRI",
            "Choice C": "C:PET",
            "Choice D": "D:US",
        },
        "B",
    ),
    # PMC-VQA answer matching no option is left out
    (
        "pmc-vqa",
        {
            "Figure_path": "f.jpg",
            "Question": "q?",
            "Answer": "SPECT",
            "Choice A": "A:CT",
            "Choice B": "B:MRI",
            "Choice C": "",
            "Choice D": "",
        },
        "answer matches no single option",
    ),
    # MMMU option lists that are images cannot be asked as text
    (
        "mmmu-med",
        {
            "id": "validation_Pharmacy_3",
            "question": "Which? <image 1>",
            "options": "['<image 2>', '<image 3>']",
            "answer": "A",
            "image_1": {"bytes": b"x", "path": "a"},
        },
        "options are images",
    ),
    # MMMU medical subject, one image, letter answer
    (
        "mmmu-med",
        {
            "id": "validation_Clinical_Medicine_7",
            "question": "What in <image 1>?",
            "options": "['a', 'b', 'c']",
            "answer": "C",
            "image_1": {"bytes": b"x", "path": "a"},
        },
        "C",
    ),
    # MedXpertQA options dict with a gap in the letters is malformed
    (
        "medxpertqa-mm",
        {"id": "MM-1", "question": "q", "options": {"A": "x", "C": "y"}, "label": "A", "images": ["a.jpeg"]},
        "malformed options",
    ),
]


@pytest.mark.parametrize("name,row,expected", HOOK_CASES)
def test_hooks_on_hand_written_rows(name, row, expected):
    spec = BENCHMARKS[name]
    out = HOOKS[spec.doc_to_mcq].fn(row, spec)
    got = out if isinstance(out, str) else out.answer
    assert got == expected


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"subjects": ["Clinical_Medicine"], "doc_to_mcq": "yes_no"}, "unknown key 'subjects'"),  # yes_no reads none
        ({"subjcts": ["Pharmacy"]}, "unknown key 'subjcts'"),  # a typo of the hook's own setting
        ({"doc_to_mcq": "nope"}, "doc_to_mcq='nope' names no hook"),
    ],
)
def test_benchmark_yaml_keys_are_declared_by_schema_or_hook(edit, message, tmp_path):
    import yaml

    from components.evaluate.benchmark import BENCHMARK_DIR, load_spec

    data = yaml.safe_load((BENCHMARK_DIR / "mmmu-med.yaml").read_text())
    path = tmp_path / "mmmu-med.yaml"
    path.write_text(yaml.safe_dump({**data, **edit}))
    with pytest.raises(ValueError, match=f"{path}: " + message.replace("(", r"\(")):
        load_spec(path)
    assert load_spec(BENCHMARK_DIR / "mmmu-med.yaml").extra["subjects"]  # the hook's declared setting reaches it


def test_s3_root_is_mirrored(bench_root, tmp_path, s3):
    """A benchmarks root on S3 (the real SeaweedFS server of the `s3` fixture) is mirrored and read like a local one."""
    client, bucket = s3
    folder = bench_root / "vqa-rad"
    for p in folder.rglob("*"):
        if p.is_file():
            client.upload_file(str(p), bucket, f"root/vqa-rad/{p.relative_to(folder).as_posix()}")
    records, stats = prepare_benchmark(
        BENCHMARKS["vqa-rad"], f"s3://{bucket}/root", tmp_path / "out", cache_dir=tmp_path / "cache"
    )
    local, _ = prepare_benchmark(BENCHMARKS["vqa-rad"], bench_root, tmp_path / "local")
    assert [r.to_dict() for r in records] == [r.to_dict() for r in local]
