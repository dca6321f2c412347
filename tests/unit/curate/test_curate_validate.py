"""great-expectations validation of curated datasets: passes on good data, names expectation and rows on bad."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from components.common.records import MCQRecord
from components.curate.validate import DatasetValidationError, DatasetValidator, ImageBounds, failures


@pytest.fixture(scope="module")
def validator():
    return DatasetValidator()


def _dataset(tmp_path, n=6, modality="CT"):
    recs = []
    (tmp_path / "images").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((32, 32, 3), 10 * i, np.uint8)).save(tmp_path / "images" / f"{i}.png")
        recs.append(MCQRecord(id=f"q{i}", question=f"Which organ {i}?", options=["a", "b", "c", "d"], answer="ABCD"[i % 4],
                              image=f"images/{i}.png", task="pmc-vqa", modality=modality))
    return recs


def test_good_dataset_passes_and_returns_the_result_json(validator, tmp_path):
    recs = _dataset(tmp_path)
    res = validator.validate("good_set", tmp_path, recs, option_counts=(4, 4), modality_shares={"CT": 1.0})
    assert res["success"] is True and res["dataset"] == "good_set"
    assert res["statistics"]["evaluated_expectations"] >= 14


def test_bad_dataset_fails_naming_expectation_and_rows(validator, tmp_path):
    recs = _dataset(tmp_path)
    recs[1].answer = "F"  # not among its 4 options (records built without .validate())
    recs[2].id = "q0"  # repeated id
    recs[3].image = recs[4].image  # same image ...
    recs[3].question = recs[4].question  # ... and same question as row 4
    (tmp_path / "images" / "5.png").write_bytes(b"broken")  # unreadable image in row 5
    with pytest.raises(DatasetValidationError) as ei:
        validator.validate("bad_set", tmp_path, recs, option_counts=(4, 4))
    err = ei.value
    msg = str(err)
    assert "dataset 'bad_set' failed validation" in msg
    by_type = {f["expectation"]: f for f in err.failures}
    assert {r["row"] for r in by_type["expect_column_values_to_be_unique"]["rows"]} == {0, 2}
    assert by_type["expect_column_pair_values_a_to_be_greater_than_b"]["rows"] == [{"row": 1, "id": "q1"}]
    assert {r["row"] for r in by_type["expect_compound_columns_to_be_unique"]["rows"]} == {3, 4}
    assert by_type["expect_column_values_to_be_in_set"]["rows"] == [{"row": 5, "id": "q5"}]
    assert "expect_column_pair_values_a_to_be_greater_than_b" in msg and "row 1 (id 'q1')" in msg
    assert failures(err.result) == err.failures


def test_image_size_bounds_and_modality_shares(validator, tmp_path):
    recs = _dataset(tmp_path, n=10)
    for r in recs[:3]:
        r.modality = "MRI"  # 30% MRI, 70% CT
    with pytest.raises(DatasetValidationError) as ei:
        validator.validate("shares_set", tmp_path, recs, bounds=ImageBounds(min_side=64, max_side=512),
                           modality_shares={"MRI": 0.5, "CT": 0.5}, share_tolerance=0.05)
    types = [f["expectation"] for f in ei.value.failures]
    assert types.count("expect_column_values_to_be_between") == 2  # width and height (32 px < 64)
    assert "expect_column_values_to_be_in_set" in types  # MRI share 0.3 below 0.45
    assert "expect_column_values_to_not_be_in_set" in types  # CT share 0.7 above 0.55
    ok = validator.validate("shares_ok", tmp_path, recs, modality_shares={"MRI": 0.3, "CT": 0.7}, share_tolerance=0.02)
    assert ok["success"]
