"""MedMNIST splits are read through medmnist's classes; bad files are rejected with the path, key and row named."""

from __future__ import annotations

import numpy as np
import pytest

from components.common.medmnist import load_split, npz_path, resolve_size


def test_load_split_reads_images_and_labels(tmp_path, npz_writer):
    npz_writer(tmp_path, "bloodmnist", n_per_class=2)  # 8 classes, RGB
    data = load_split(tmp_path, "bloodmnist", "train", 28)
    imgs, labels = data.imgs, data.labels
    assert imgs.shape == (16, 28, 28, 3) and imgs.dtype == np.uint8
    assert labels.shape == (16, 1) and labels.max() == 7


def test_missing_npz_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "pneumoniamnist.npz")):
        load_split(tmp_path, "pneumoniamnist", "train", 28)
    with pytest.raises(FileNotFoundError, match="pneumoniamnist_<64|128|224>"):
        resolve_size(tmp_path, "pneumoniamnist", prefer=224)


def test_wrong_keys_name_the_key(tmp_path, npz_writer):
    npz_writer(tmp_path, "pneumoniamnist", keys={"test_images": "test_imgs"})
    with pytest.raises(ValueError, match="'test_images'.*pneumoniamnist.npz|pneumoniamnist.npz.*'test_images'"):
        load_split(tmp_path, "pneumoniamnist", "test", 28)


def test_out_of_range_label_names_the_row(tmp_path):
    path = npz_path(tmp_path, "pneumoniamnist", 28)
    imgs = np.zeros((3, 28, 28), np.uint8)
    arrays = {f"{s}_images": imgs for s in ("train", "val", "test")}
    arrays.update({f"{s}_labels": np.array([[0], [1], [5]], np.uint8) for s in ("train", "val", "test")})
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="row 2"):
        load_split(tmp_path, "pneumoniamnist", "train", 28)


def test_explicit_size_that_is_absent_names_the_file(tmp_path):
    npz_path(tmp_path, "octmnist", 28).write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="octmnist_224.npz"):
        resolve_size(tmp_path, "octmnist", explicit=224)


@pytest.mark.parametrize(
    "present, image_size, npz_size, want",
    [
        ([28, 64], 224, 0, 64),  # no 224 file: the largest present
        ([28, 224], 224, 0, 224),  # the file matching the tower's image size
        ([28, 224], 56, 0, 224),  # 56 is no MedMNIST size: the largest present
        ([28, 224], 224, 28, 28),  # an explicit --npz-size wins
    ],
)
def test_resolve_size(tmp_path, present, image_size, npz_size, want):
    for s in present:
        npz_path(tmp_path, "octmnist", s).write_bytes(b"x")
    assert resolve_size(tmp_path, "octmnist", explicit=npz_size, prefer=image_size) == want
