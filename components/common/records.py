"""The record every step passes around: a multiple-choice question about one image.

A *dataset artifact* is a directory:

    records.jsonl     one `MCQRecord` per line (JSON)
    images/           the image files that records name by relative path
    lineage.json      provenance (components.common.lineage)
    card.md           optional dataset card

`load_records` validates every row and names the file, the line and the field of anything wrong.

An evaluation set may also hold open-ended questions (no options, a reference answer text), scored apart from the
multiple-choice ones: `open.jsonl`, one `OpenRecord` per line (`load_open_records`, `save_open_records`).
"""

from __future__ import annotations

import dataclasses
import random
import string
from collections import defaultdict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.common.io import read_jsonl, write_jsonl

LETTERS = string.ascii_uppercase
MODALITIES = ("MRI", "CT", "ultrasound", "X-ray", "microscopy", "dermatology", "OCT", "none")
RECORDS_FILE = "records.jsonl"
OPEN_FILE = "open.jsonl"


@dataclass
class MCQRecord:
    id: str
    question: str
    options: list[str]
    answer: str  # option letter, "A" for options[0]
    image: str | None  # path relative to the dataset directory
    task: str  # medmnist flag ("pneumoniamnist"), "pmc-vqa", or a benchmark name
    modality: str = "none"
    split: str = "train"
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def answer_index(self) -> int:
        return LETTERS.index(self.answer)

    @property
    def answer_text(self) -> str:
        return self.options[self.answer_index]

    def validate(self, where: str = "record") -> MCQRecord:
        """Raise ValueError naming `where` and the field if the record is malformed; return self."""
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"{where}: field 'id' must be a non-empty string, got {self.id!r}")
        if not isinstance(self.question, str) or not self.question.strip():
            raise ValueError(f"{where}: field 'question' is empty (id {self.id!r})")
        if not isinstance(self.options, list) or not 2 <= len(self.options) <= len(LETTERS):
            raise ValueError(f"{where}: field 'options' must list 2-26 options (id {self.id!r}), got {self.options!r}")
        if any(not isinstance(o, str) or not o.strip() for o in self.options):
            raise ValueError(f"{where}: field 'options' holds an empty option (id {self.id!r})")
        valid = LETTERS[: len(self.options)]
        if not isinstance(self.answer, str) or self.answer not in valid:
            raise ValueError(
                f"{where}: field 'answer' is {self.answer!r} but must be one of {', '.join(valid)} (id {self.id!r})"
            )
        if self.modality not in MODALITIES:
            raise ValueError(
                f"{where}: field 'modality' is {self.modality!r}; expected one of {', '.join(MODALITIES)} (id {self.id!r})"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "record") -> MCQRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        missing = required - d.keys()
        if missing:
            raise ValueError(f"{where}: missing field(s) {', '.join(sorted(missing))}")
        unknown = d.keys() - names
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        return cls(**d).validate(where)


def option_letters(n: int) -> str:
    return LETTERS[:n]


def load_records(dataset_dir: str | Path) -> list[MCQRecord]:
    """Read and validate `records.jsonl` of a dataset directory; image paths are checked to exist."""
    dataset_dir = Path(dataset_dir)
    path = dataset_dir / RECORDS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{dataset_dir}: not a MedBridge dataset (no {RECORDS_FILE})")
    records = []
    seen: set[str] = set()
    for lineno, row in enumerate(read_jsonl(path), start=1):
        where = f"{path}: line {lineno}"
        rec = MCQRecord.from_dict(row, where)
        if rec.id in seen:
            raise ValueError(f"{where}: field 'id' repeats {rec.id!r}; ids must be unique")
        seen.add(rec.id)
        if rec.image is not None and not (dataset_dir / rec.image).is_file():
            raise FileNotFoundError(f"{where}: field 'image' names {rec.image!r}, which is not in {dataset_dir}")
        records.append(rec)
    return records


def save_records(dataset_dir: str | Path, records: list[MCQRecord]) -> Path:
    """Write `records.jsonl` atomically (images must already be in place under the directory)."""
    return write_jsonl(Path(dataset_dir) / RECORDS_FILE, [r.validate().to_dict() for r in records])


def open_image(dataset_dir: str | Path, rec: MCQRecord):
    """The record's image as an RGB PIL image (None for a text-only question)."""
    if rec.image is None:
        return None
    return open_rgb(Path(dataset_dir) / rec.image)


def open_rgb(path: str | Path):
    """The image file at `path` as an RGB PIL image (read now, file closed)."""
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def balanced_take(
    records: list[MCQRecord], n: int, key: Callable[[MCQRecord], Hashable], seed: int
) -> list[MCQRecord]:
    """Up to `n` records drawn round-robin over the groups `key` defines (groups in sorted order, each shuffled with
    `seed`), so that every group is represented as evenly as its size allows. Deterministic for a seed."""
    groups: dict[Hashable, list[MCQRecord]] = defaultdict(list)
    for r in records:
        groups[key(r)].append(r)
    rng = random.Random(seed)
    keys = sorted(groups)
    for k in keys:
        rng.shuffle(groups[k])
    out: list[MCQRecord] = []
    while len(out) < n and any(groups.values()):
        for k in keys:
            if groups[k] and len(out) < n:
                out.append(groups[k].pop())
    return out


@dataclass
class OpenRecord:
    """An open-ended question about one image: scored by normalised exact match / token F1 or by the judge."""

    id: str
    question: str
    answer: str  # the reference answer text
    image: str | None
    task: str
    modality: str = "none"
    split: str = "test"
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def validate(self, where: str = "record") -> OpenRecord:
        for name in ("id", "question", "answer"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{where}: field {name!r} must be a non-empty string (id {self.id!r})")
        if self.modality not in MODALITIES:
            raise ValueError(f"{where}: field 'modality' is {self.modality!r}; expected one of {', '.join(MODALITIES)}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_open_records(dataset_dir: str | Path) -> list[OpenRecord]:
    """`open.jsonl` of a dataset directory ([] when there is none), validated like `load_records`."""
    dataset_dir = Path(dataset_dir)
    path = dataset_dir / OPEN_FILE
    if not path.is_file():
        return []
    out = []
    names = {f.name for f in dataclasses.fields(OpenRecord)}
    for lineno, row in enumerate(read_jsonl(path), start=1):
        where = f"{path}: line {lineno}"
        missing = {"id", "question", "answer", "image", "task"} - row.keys()
        if missing:
            raise ValueError(f"{where}: missing field(s) {', '.join(sorted(missing))}")
        unknown = row.keys() - names
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        rec = OpenRecord(**row).validate(where)
        if rec.image is not None and not (dataset_dir / rec.image).is_file():
            raise FileNotFoundError(f"{where}: field 'image' names {rec.image!r}, which is not in {dataset_dir}")
        out.append(rec)
    return out


def save_open_records(dataset_dir: str | Path, records: list[OpenRecord]) -> Path:
    return write_jsonl(Path(dataset_dir) / OPEN_FILE, [r.validate().to_dict() for r in records])


def image_key(path: str | Path) -> str:
    """sha256 of an image's decoded RGB pixels and size: the same picture stored as JPEG in one source and as a
    lossless PNG copy in another gets the same key (a re-encoded, resized or cropped copy does not)."""
    import hashlib

    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB")
        h = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode())
        h.update(rgb.tobytes())
    return h.hexdigest()
