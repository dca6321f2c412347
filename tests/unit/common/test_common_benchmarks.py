"""Benchmarks as data: every YAML loads, maps its synthetic copy (public layout) to valid MCQ records, the filter
keeps exactly the questions it should, open questions are kept apart, MedVLThinker-Eval splits by benchmark, and a
file missing a mapped field is a one-line error naming file, row and field."""

from __future__ import annotations

import json

import pytest

from components.common.records import load_open_records, load_records
from components.common.benchmark import (
    BENCHMARKS,
    DEFAULT_BENCHMARKS,
    load_registry,
    parse_benchmarks,
    prepare_benchmark,
)
from components.common.benchmark_hooks import HOOKS, parse_options_text
from components.evaluate.synthetic import MEDICAL_SUBJECTS, write_synthetic_benchmarks


@pytest.fixture(scope="module")
def bench_root(tmp_path_factory):
    return write_synthetic_benchmarks(tmp_path_factory.mktemp("benchmarks"), n=24, seed=3)


def test_registry_holds_the_six_benchmarks_and_the_papers_combined_set():
    assert set(load_registry()) == set(DEFAULT_BENCHMARKS) | {"medvlthinker-eval"} == set(BENCHMARKS)
    assert parse_benchmarks("all") == list(DEFAULT_BENCHMARKS)
    assert parse_benchmarks("none") == []
    with pytest.raises(ValueError, match="not known"):
        parse_benchmarks("vqa-rad,chexpert")


@pytest.mark.parametrize("name", DEFAULT_BENCHMARKS)
def test_synthetic_copy_maps_to_valid_records(bench_root, tmp_path, name):
    records, stats = prepare_benchmark(BENCHMARKS[name], bench_root, tmp_path / name)
    assert records and stats.used == stats.kept == len(records) + stats.open
    assert stats.rows == 24 and stats.kept + sum(stats.excluded.values()) == 24
    reloaded = load_records(tmp_path / name)  # validates every row and checks the images exist
    assert [r.id for r in reloaded] == [r.id for r in records]
    assert all(r.task == name for r in reloaded)
    assert len(load_open_records(tmp_path / name)) == stats.open


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


def test_yes_no_benchmarks_keep_closed_questions_as_two_options_and_open_ones_apart(bench_root, tmp_path):
    for name in ("vqa-rad", "pathvqa"):
        raw = _raw_rows(bench_root, name)
        want = sum(r["answer"].strip().lower() in ("yes", "no") for r in raw)
        records, stats = prepare_benchmark(BENCHMARKS[name], bench_root, tmp_path / name)
        assert 0 < want < len(raw)  # the copy holds open questions too
        # open questions are scored apart (open.jsonl, reference = the answer text), not dropped
        assert len(records) == want and stats.open == len(raw) - want and stats.excluded == {}
        opened = load_open_records(tmp_path / name)
        assert [o.answer for o in opened] == [r["answer"] for r in raw if r["answer"].strip().lower() not in ("yes", "no")]
        for r in records:
            assert r.options == ["yes", "no"]
        # answers line up with the raw rows (A = yes, B = no)
        closed = [r for r in raw if r["answer"].strip().lower() in ("yes", "no")]
        assert [r.answer for r in records] == ["A" if c["answer"].lower() == "yes" else "B" for c in closed]


def test_slake_keeps_english_yes_no_as_choice_and_english_open_apart(bench_root, tmp_path):
    raw = _raw_rows(bench_root, "slake")
    want = [r for r in raw if r["q_lang"] == "en" and r["answer"].lower() in ("yes", "no")]
    assert any(r["q_lang"] == "zh" for r in raw)
    records, _ = prepare_benchmark(BENCHMARKS["slake"], bench_root, tmp_path / "slake")
    assert [r.id for r in records] == [f"slake-{r['qid']}" for r in want]
    assert all(r.question.isascii() for r in records)  # no Chinese question slipped through
    assert {r.modality for r in records} <= {"CT", "MRI", "X-ray"}  # SLAKE's modality column is mapped
    opened = load_open_records(tmp_path / "slake")
    assert [o.id for o in opened] == [f"slake-{r['qid']}" for r in raw if r["q_lang"] == "en" and r not in want]


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
    # an open answer becomes an open question whose reference is the answer text
    (
        "vqa-rad",
        {"image": {"bytes": b"x", "path": None}, "question": "Where is the lesion?", "answer": "left lobe"},
        "left lobe",
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
    # MedVLThinker-Eval: options as one "A. ...\nB. ..." string, the letter in answer_label
    (
        "medvlthinker-eval",
        {"images": [{"bytes": b"x", "path": "a"}], "question": "q?", "options": "A. liver\nB. spleen", "answer_label": "B",
         "answer": "spleen", "dataset_name": "SLAKE"},
        "B",
    ),
    # MedVLThinker-Eval: a label outside the options
    (
        "medvlthinker-eval",
        {"images": [{"bytes": b"x", "path": "a"}], "question": "q?", "options": "A. liver\nB. spleen", "answer_label": "C",
         "answer": "x", "dataset_name": "SLAKE"},
        "answer is not an option letter",
    ),
    # MedVLThinker-Eval: two images cannot go into one MCQ record
    (
        "medvlthinker-eval",
        {"images": [{"bytes": b"x", "path": "a"}, {"bytes": b"y", "path": "b"}], "question": "q?",
         "options": "A. a\nB. b", "answer_label": "A", "answer": "a", "dataset_name": "MMMU"},
        "more than 1 image(s)",
    ),
]


@pytest.mark.parametrize("name,row,expected", HOOK_CASES)
def test_hooks_on_hand_written_rows(name, row, expected):
    spec = BENCHMARKS[name]
    out = HOOKS[spec.doc_to_mcq].fn(row, spec)
    got = out if isinstance(out, str) else out.answer
    assert got == expected


# (raw options as stored, expected list or None)
OPTION_TEXT_CASES = [
    ("A. liver\nB. spleen\nC. kidney", ["liver", "spleen", "kidney"]),  # the documented one-string form
    ("A) liver\nB) right\nlower lobe", ["liver", "right lower lobe"]),  # a wrapped option continues the one before
    ('{"A": "liver", "B": "spleen"}', ["liver", "spleen"]),  # a JSON dict in a string, as some copies store it
    ("{'B': 'spleen', 'A': 'liver'}", ["liver", "spleen"]),  # a Python-literal dict, keys out of order
    ({"A": "x", "C": "y"}, None),  # a gap in the letters
    ("A. liver\nC. spleen", None),  # letters out of sequence
    ("liver, spleen", None),  # not lettered at all
    (["a", "b"], ["a", "b"]),  # a list
    ("A. only one", None),  # one option is no question
]


@pytest.mark.parametrize("raw, expected", OPTION_TEXT_CASES)
def test_parse_options_text(raw, expected):
    assert parse_options_text(raw) == expected


def test_medvlthinker_eval_splits_by_benchmark_and_keeps_open_rows_apart(bench_root, tmp_path):
    import pyarrow.parquet as pq

    raw = pq.read_table(bench_root / "medvlthinker-eval" / "data" / "test-00000-of-00001.parquet").to_pylist()
    records, stats = prepare_benchmark(BENCHMARKS["medvlthinker-eval"], bench_root, tmp_path / "mvt")
    assert {r.task for r in records} == {"medvlthinker-eval/pmc-vqa", "medvlthinker-eval/mmmu-med",
                                         "medvlthinker-eval/medxpertqa-mm", "medvlthinker-eval/pathvqa",
                                         "medvlthinker-eval/slake", "medvlthinker-eval/vqa-rad"}
    two_images = sum(len(r["images"]) > 1 for r in raw)
    opened = load_open_records(tmp_path / "mvt")
    assert stats.excluded == {"more than 1 image(s)": two_images} and len(opened) == stats.open > 0
    single = [r for r in raw if len(r["images"]) == 1 and r["answer_label"]]
    assert [r.answer for r in records] == [r["answer_label"] for r in single]
    assert all(r.answer_text == s["answer"] for r, s in zip(records, single))  # string and dict options both read


def test_a_benchmark_file_missing_a_field_names_file_row_and_field(bench_root, tmp_path):
    import shutil

    import pyarrow.parquet as pq

    folder = tmp_path / "root" / "vqa-rad"
    shutil.copytree(bench_root / "vqa-rad", folder)
    path = folder / "data" / "test-00000-of-00001.parquet"
    pq.write_table(pq.read_table(path).drop(["question"]), path)
    with pytest.raises(ValueError, match=r"test-00000-of-00001.parquet: row 0: missing field 'question'"):
        prepare_benchmark(BENCHMARKS["vqa-rad"], tmp_path / "root", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


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

    from components.common.benchmark import BENCHMARK_DIR, load_spec

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
