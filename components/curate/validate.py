"""Validation of every curated MCQ dataset with great-expectations, before anything trains on it.

    validator = DatasetValidator()
    result = validator.validate("rl_set", dataset_dir, records, option_counts=(4, 4),
                                modality_shares={"CT": 0.142, ...}, share_tolerance=0.02)
    # -> the suite result as a JSON dict; raises DatasetValidationError when an expectation fails

Expectations (one suite per dataset, run offline on a pandas frame of the records, one row per question):
schema (exact column set), non-null id/question/answer/image, unique ids, no duplicate question (same image
content + same question text), option count within bounds, answer index within the options, answer letter a
capital letter, modality one of MODALITIES, every image readable, image width and height within bounds and,
for the modality-balanced set, each modality's share within a tolerance of the planned share.

A failing suite raises an error that names the dataset, each failed expectation and its failing rows (row index
and record id).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.common.records import LETTERS, MODALITIES, MCQRecord

COLUMNS = ["row", "id", "question", "answer", "answer_index", "n_options", "image", "image_sha256", "image_readable",
           "width", "height", "modality", "task", "split", "source"]
MAX_ROWS_IN_ERROR = 20


class DatasetValidationError(ValueError):
    def __init__(self, dataset: str, failures: list[dict[str, Any]], result: dict[str, Any]):
        self.dataset, self.failures, self.result = dataset, failures, result
        lines = [f"dataset {dataset!r} failed validation ({len(failures)} expectation(s)):"]
        for f in failures:
            rows = f["rows"]
            shown = ", ".join(f"row {r.get('row')} (id {r.get('id')!r})" for r in rows[:MAX_ROWS_IN_ERROR])
            more = f" and {len(rows) - MAX_ROWS_IN_ERROR} more" if len(rows) > MAX_ROWS_IN_ERROR else ""
            lines.append(f"  - {f['expectation']} {f['kwargs']}: " + (f"failing rows: {shown}{more}" if rows else f"observed {f['observed']}"))
        super().__init__("\n".join(lines))


@dataclass
class ImageBounds:
    min_side: int = 8
    max_side: int = 8192


def records_frame(dataset_dir: str | Path, records: list[MCQRecord]):
    """One row per record with the fields the expectations check (images opened to read their size)."""
    import pandas as pd
    from PIL import Image

    dataset_dir = Path(dataset_dir)
    rows = []
    for i, r in enumerate(records):
        readable, w, h, sha = False, None, None, None
        if r.image is not None:
            p = dataset_dir / r.image
            try:
                data = p.read_bytes()
                sha = hashlib.sha256(data).hexdigest()
                with Image.open(p) as im:
                    im.load()
                    w, h = im.size
                readable = True
            except Exception:
                readable = False
        rows.append({
            "row": i, "id": r.id, "question": r.question, "answer": r.answer,
            "answer_index": LETTERS.index(r.answer) if isinstance(r.answer, str) and len(r.answer) == 1 and r.answer in LETTERS else -1,
            "n_options": len(r.options), "image": r.image, "image_sha256": sha, "image_readable": readable,
            "width": w, "height": h, "modality": r.modality, "task": r.task, "split": r.split, "source": r.source,
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def build_suite(
    name: str,
    option_counts: tuple[int, int] = (2, 26),
    bounds: ImageBounds = ImageBounds(),
    modality_shares: dict[str, float] | None = None,
    share_tolerance: float = 0.02,
):
    import great_expectations as gx
    import great_expectations.expectations as gxe

    exps = [
        gxe.ExpectTableColumnsToMatchSet(column_set=COLUMNS, exact_match=True),
        *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("id", "question", "answer", "image")),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["image_sha256", "question"]),
        gxe.ExpectColumnValuesToBeBetween(column="n_options", min_value=option_counts[0], max_value=option_counts[1]),
        gxe.ExpectColumnValuesToBeBetween(column="answer_index", min_value=0, max_value=25),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="n_options", column_B="answer_index"),
        gxe.ExpectColumnValuesToBeInSet(column="modality", value_set=list(MODALITIES)),
        gxe.ExpectColumnValuesToBeInSet(column="image_readable", value_set=[True]),
        gxe.ExpectColumnValuesToBeBetween(column="width", min_value=bounds.min_side, max_value=bounds.max_side),
        gxe.ExpectColumnValuesToBeBetween(column="height", min_value=bounds.min_side, max_value=bounds.max_side),
    ]
    for m, share in (modality_shares or {}).items():
        lo, hi = max(0.0, share - share_tolerance), min(1.0, share + share_tolerance)
        # share >= lo: at least lo of the rows are m; share <= hi: at least 1-hi of the rows are not m.
        if lo > 0:
            exps.append(gxe.ExpectColumnValuesToBeInSet(column="modality", value_set=[m], mostly=lo))
        if hi < 1:
            exps.append(gxe.ExpectColumnValuesToNotBeInSet(column="modality", value_set=[m], mostly=round(1 - hi, 6)))
    return gx.ExpectationSuite(name=name, expectations=exps)


class DatasetValidator:
    """Holds one ephemeral (offline, in-memory) great-expectations context for all datasets of a run."""

    def __init__(self):
        import great_expectations as gx

        self.context = gx.get_context(mode="ephemeral")
        self.source = self.context.data_sources.add_pandas("medbridge_curate")

    def validate(
        self,
        name: str,
        dataset_dir: str | Path,
        records: list[MCQRecord],
        *,
        option_counts: tuple[int, int] = (2, 26),
        bounds: ImageBounds = ImageBounds(),
        modality_shares: dict[str, float] | None = None,
        share_tolerance: float = 0.02,
        raise_on_failure: bool = True,
    ) -> dict[str, Any]:
        """Run the suite on the records of `dataset_dir`; return the result JSON (raise if it failed)."""
        df = records_frame(dataset_dir, records)
        asset = self.source.add_dataframe_asset(name)
        batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": df})
        suite = build_suite(name, option_counts, bounds, modality_shares, share_tolerance)
        res = batch.validate(suite, result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["row", "id"]})
        result = json.loads(json.dumps(res.to_json_dict(), default=str))
        result["dataset"] = name
        if not res.success and raise_on_failure:
            raise DatasetValidationError(name, failures(result), result)
        return result


def failures(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The failed expectations of a suite result: type, kwargs, failing rows ({row, id}) and observed value."""
    out = []
    for r in result.get("results", []):
        if r.get("success"):
            continue
        cfg = r.get("expectation_config", {})
        kwargs = {k: v for k, v in cfg.get("kwargs", {}).items() if k not in ("batch_id", "result_format")}
        res = r.get("result", {}) or {}
        rows = [{"row": x.get("row"), "id": x.get("id")} for x in res.get("unexpected_index_list") or [] if isinstance(x, dict)]
        out.append({"expectation": cfg.get("type"), "kwargs": kwargs, "rows": rows,
                    "observed": res.get("observed_value", res.get("unexpected_percent"))})
    return out
