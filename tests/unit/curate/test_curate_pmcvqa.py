"""PMC-VQA loader: both CSV layouts, letter prefixes, and every kind of bad row going to the quarantine."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from components.curate.pmcvqa import find_csv, load_pmc_vqa

HEADER = ["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D", "Answer_label"]


def _image(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (np.random.default_rng(seed).random((32, 32, 3)) * 255).astype("uint8")
    Image.fromarray(arr).save(path)


def _write_csv(path, header, rows, raw_tail: str = ""):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
        f.write(raw_tail)


@pytest.fixture()
def labelled_root(tmp_path):
    """train.csv with Answer_label (the public layout) and one row of each bad kind."""
    for i in range(1, 8):
        _image(tmp_path / "images" / f"PMC{i}_F1.jpg", i)
    (tmp_path / "images" / "PMC9_F1.jpg").write_bytes(b"not an image")
    rows = [
        # line 2: good, choices with the public "A:" prefixes and trailing spaces
        ["PMC1_F1.jpg", "What is the uptake pattern in the breast?", "Focal uptake pattern",
         "A:Diffuse uptake pattern", "B:Focal uptake pattern ", "C:No uptake pattern", "D:Cannot determine ", "B"],
        # line 3: good, answer given with its letter prefix
        ["PMC2_F1.jpg", "Which modality was used?", "C:MRI", "A:CT ", "B:X-ray", "C:MRI ", "D:PET", "C"],
        # line 4: empty question
        ["PMC3_F1.jpg", "   ", "CT", "A:CT", "B:MRI", "C:PET", "D:X-ray", "A"],
        # line 5: answer text disagrees with the labelled choice -> not among the options
        ["PMC4_F1.jpg", "What is shown?", "Pneumonia", "A:Edema", "B:Mass", "C:Effusion", "D:Normal", "B"],
        # line 6: image file does not exist
        ["PMC404_F1.jpg", "What is shown?", "Mass", "A:Edema", "B:Mass", "C:Effusion", "D:Normal", "B"],
        # line 7: image file exists but is not an image
        ["PMC9_F1.jpg", "What is shown?", "Mass", "A:Edema", "B:Mass", "C:Effusion", "D:Normal", "B"],
        # line 8: answer label outside A-D
        ["PMC5_F1.jpg", "What is shown?", "Mass", "A:Edema", "B:Mass", "C:Effusion", "D:Normal", "E"],
        # line 9: same image and question as line 2 -> duplicate
        ["PMC2_F1.jpg", "Which modality was used?", "MRI", "A:CT", "B:X-ray", "C:MRI", "D:PET", "C"],
        # line 10: an empty option
        ["PMC6_F1.jpg", "What is shown?", "Mass", "A:Edema", "B:Mass", "C:", "D:Normal", "B"],
    ]
    # line 11: malformed line (too few fields); line 12: good row after it, read on
    tail = 'PMC7_F1.jpg,broken row,CT\nPMC7_F1.jpg,What organ is shown?,Liver,A:Liver,B:Spleen,C:Kidney,D:Heart,A\n'
    _write_csv(tmp_path / "train.csv", HEADER, rows, tail)
    return tmp_path


def test_answer_label_layout_parses_prefixes_and_quarantines_each_bad_row(labelled_root):
    out = load_pmc_vqa(labelled_root)
    assert out.has_answer_label
    by_line = {r.meta["line"]: r for r in out.records}
    assert sorted(by_line) == [2, 3, 12]
    r = by_line[2]
    assert r.options == ["Diffuse uptake pattern", "Focal uptake pattern", "No uptake pattern", "Cannot determine"]
    assert (r.answer, r.answer_text) == ("B", "Focal uptake pattern")
    assert r.image == "images/PMC1_F1.jpg" and r.source == "pmc-vqa" and r.id == "pmcvqa-train-0000001"
    assert (by_line[3].answer, by_line[3].answer_text) == ("C", "MRI")

    q = {e.line: e for e in out.quarantine}
    assert sorted(q) == [4, 5, 6, 7, 8, 9, 10, 11]
    expect = {
        4: ("Question", "empty question"),
        5: ("Answer", "answer not among the options"),
        6: ("Figure_path", "missing image"),
        7: ("Figure_path", "unreadable image"),
        8: ("Answer_label", "answer label is not one of A, B, C, D"),
        9: ("Question", "duplicate question"),
        10: ("Choice C", "empty option"),
        11: ("<line>", "malformed CSV line"),
    }
    for line, (field, reason) in expect.items():
        assert q[line].field == field, line
        assert q[line].reason.startswith(reason), (line, q[line].reason)
        assert q[line].file == str(labelled_root / "train.csv")
    assert out.n_rows == len(out.records) + len(out.quarantine)


def test_layout_without_answer_label(tmp_path):
    for i in range(1, 5):
        _image(tmp_path / "figures" / f"PMC{i}_F1.jpg", i)
    header = HEADER[:-1]
    rows = [
        # answer carries its letter prefix (the first public release)
        ["PMC1_F1.jpg", "What is the uptake pattern?", "B:Focal uptake pattern", "A:Diffuse", "B:Focal uptake pattern", "C:None", "D:Unknown"],
        # bare answer text, matched to the options case- and space-insensitively
        ["PMC2_F1.jpg", "Which modality?", " mri ", "A:CT", "B:X-ray", "C:MRI", "D:PET"],
        # answer text matching no option
        ["PMC3_F1.jpg", "Which modality?", "Ultrasound", "A:CT", "B:X-ray", "C:MRI", "D:PET"],
        # no answer at all
        ["PMC4_F1.jpg", "Which modality?", "", "A:CT", "B:X-ray", "C:MRI", "D:PET"],
    ]
    _write_csv(tmp_path / "test.csv", header, rows)
    out = load_pmc_vqa(tmp_path)  # the only CSV, images under figures/
    assert not out.has_answer_label
    assert [(r.answer, r.answer_text) for r in out.records] == [("B", "Focal uptake pattern"), ("C", "MRI")]
    assert [(e.line, e.field, e.reason) for e in out.quarantine] == [
        (4, "Answer", "answer not among the options"),
        (5, "Answer", "no answer given"),
    ]


def test_missing_column_is_an_error_naming_file_and_column(tmp_path):
    _write_csv(tmp_path / "train.csv", ["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C"], [])
    with pytest.raises(ValueError, match=r"train\.csv: line 1: missing column 'Choice D'"):
        load_pmc_vqa(tmp_path)


def test_find_csv_prefers_train_2_and_names_ambiguity(tmp_path):
    (tmp_path / "a.csv").write_text("x\n")
    (tmp_path / "b.csv").write_text("x\n")
    with pytest.raises(FileNotFoundError, match="several CSVs present: a.csv, b.csv"):
        find_csv(tmp_path)
    (tmp_path / "train_2.csv").write_text("x\n")
    assert find_csv(tmp_path).name == "train_2.csv"


def test_synthetic_writer_round_trips(pmc_root):
    out = load_pmc_vqa(pmc_root)
    assert len(out.records) == 40 and out.quarantine == []
    from components.common.lineage import is_synthetic

    assert is_synthetic(pmc_root)  # the generator marks its root synthetic in lineage, the one marker
    # every question names a modality in its text except the 'none' ones; answers are among the options
    assert all(r.answer_text in r.options for r in out.records)
