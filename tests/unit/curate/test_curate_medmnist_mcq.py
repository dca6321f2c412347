"""MedMNIST MCQ builder: all twelve tasks, ChestMNIST's single-answer form, seeded shuffles, clear npz errors."""

from __future__ import annotations

import numpy as np
import pytest
from medmnist import INFO

from components.common.medmnist import load_split, npz_path
from components.curate.medmnist_mcq import build_medmnist_mcq
from components.common.medmnist_tasks import TASKS
from components.common.records import load_records, save_records


@pytest.mark.parametrize("flag", list(TASKS))
def test_every_task_builds_balanced_mcqs_whose_answer_is_the_label(flag, medmnist_all, tmp_path):
    names = list(INFO[flag]["label"].values())
    recs = build_medmnist_mcq(medmnist_all, flag, "val", tmp_path, per_class=2, seed=0)
    data = load_split(medmnist_all, flag, "val")
    assert len(recs) == 2 * len(names)  # 3 images per class in the fixture, 2 taken per class
    for r in recs:
        row = r.meta["row"]
        assert r.task == flag and r.split == "val" and r.source == "medmnist"
        assert r.modality == TASKS[flag].modality and r.meta["group"] == TASKS[flag].group
        assert r.answer_text == r.meta["label_name"] == names[r.meta["label"]]
        if flag == "chestmnist":
            # one positive finding among the options (the answer); every other option is negative for the image
            positives = {names[c] for c in np.flatnonzero(data.labels[row])}
            assert len(r.options) == 4 and r.answer_text in positives
            assert not (set(r.options) - {r.answer_text}) & positives
        else:
            assert int(data.labels[row, 0]) == r.meta["label"]
            assert sorted(r.options) == sorted(names)  # all class names, shuffled
            assert r.answer == "ABCDEFGHIJK"[r.options.index(names[r.meta["label"]])]
        assert (tmp_path / r.image).is_file()
    save_records(tmp_path, recs)
    assert len(load_records(tmp_path)) == len(recs)


def test_organ_tasks_use_eleven_letters_and_seeded_shuffle_is_deterministic(medmnist_all, tmp_path):
    a = build_medmnist_mcq(medmnist_all, "organamnist", "test", tmp_path / "a", per_class=2, seed=3)
    b = build_medmnist_mcq(medmnist_all, "organamnist", "test", tmp_path / "b", per_class=2, seed=3)
    c = build_medmnist_mcq(medmnist_all, "organamnist", "test", tmp_path / "c", per_class=2, seed=4)
    assert [r.to_dict() for r in a] == [r.to_dict() for r in b]  # same seed, same questions
    assert [r.options for r in a] != [r.options for r in c]  # another seed shuffles differently
    assert all(len(r.options) == 11 for r in a)
    assert {r.answer for r in a} <= set("ABCDEFGHIJK") and len({r.answer for r in a}) > 3
    assert len({tuple(r.options) for r in a}) > 1  # shuffled per question, not once per task


def test_chest_images_without_findings_are_skipped(medmnist_all, tmp_path):
    data = load_split(medmnist_all, "chestmnist", "train")
    empty = set(np.flatnonzero(data.labels.sum(1) == 0))
    assert empty  # the fixture has "no finding" images
    recs = build_medmnist_mcq(medmnist_all, "chestmnist", "train", tmp_path, per_class=None, seed=0)
    assert not {r.meta["row"] for r in recs} & empty
    assert len({r.meta["row"] for r in recs}) == len(recs)  # an image answers one question at most


def _write(path, **arrays):
    np.savez(path, **arrays)


@pytest.fixture()
def good_arrays():
    imgs = np.zeros((4, 28, 28), np.uint8)
    labels = np.array([[0], [1], [0], [1]], np.uint8)
    return {f"{s}_{k}": (imgs if k == "images" else labels) for s in ("train", "val", "test") for k in ("images", "labels")}


def test_missing_file_names_the_expected_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "pneumoniamnist_224.npz")):
        load_split(tmp_path, "pneumoniamnist", "val", size=224)


def test_missing_key_is_named(tmp_path, good_arrays):
    del good_arrays["val_labels"]
    _write(tmp_path / "pneumoniamnist.npz", **good_arrays)
    with pytest.raises(ValueError, match=r"pneumoniamnist\.npz: missing key 'val_labels'"):
        load_split(tmp_path, "pneumoniamnist", "val")


def test_label_out_of_range_names_file_split_row_value(tmp_path, good_arrays):
    good_arrays["test_labels"] = np.array([[0], [1], [7], [1]], np.uint8)
    _write(tmp_path / "pneumoniamnist.npz", **good_arrays)
    with pytest.raises(ValueError, match=r"pneumoniamnist\.npz: split 'test': row 2: field 'test_labels' is 7; pneumoniamnist has 2 classes"):
        load_split(tmp_path, "pneumoniamnist", "test")


def test_image_shape_mismatch_names_expected_and_got(tmp_path, good_arrays):
    good_arrays["train_images"] = np.zeros((4, 28, 28, 3), np.uint8)  # RGB where the task is grey
    _write(tmp_path / "pneumoniamnist.npz", **good_arrays)
    with pytest.raises(ValueError, match=r"split 'train': field 'train_images' has shape \(4, 28, 28, 3\); expected N×28×28"):
        load_split(tmp_path, "pneumoniamnist", "train")


def test_small_files_open_through_medmnist_despite_its_length_assert(tmp_path, good_arrays):
    _write(npz_path(tmp_path, "pneumoniamnist", 28), **good_arrays)
    data = load_split(tmp_path, "pneumoniamnist", "train")  # 4 rows, not the official 4708
    assert data.imgs.shape == (4, 28, 28) and data.class_names == ["normal", "pneumonia"]
