"""Small per-benchmark hooks: one public row -> one closed-form multiple-choice question, or the reason it is left out.

A benchmark YAML names its hook with `doc_to_mcq: <name>`; the names are the keys of `HOOKS` (a plain dict, as
lm-evaluation-harness's `!function` hooks, without the import magic). A hook gets the raw row (a dict in the
benchmark's public schema) and the benchmark spec, and returns an `MCQDoc` or a `str` saying why the row is not a
closed-form question we can score by option letter. Every exclusion is counted in the results by its reason.

A hook declares the YAML settings it reads beyond the schema (`Hook.settings`, e.g. MMMU's `subjects`); they reach it
as `spec.extra`. A YAML key that neither the schema nor its hook declares is an error naming the file and the key.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from components.common.records import LETTERS

if TYPE_CHECKING:
    from components.evaluate.benchmark import BenchmarkSpec

YES_NO = ("yes", "no")
_CHOICE_PREFIX = re.compile(r"^\s*\(?[A-Z]\)?\s*[:.)]\s*")  # PMC-VQA writes choices as "A:Focal uptake pattern"
_MMMU_IMAGE_TAG = re.compile(r"<image (\d+)>")
_ANSWER_CHOICES = re.compile(r"\s*Answer Choices:.*$", re.DOTALL)  # MedXpertQA repeats the options in the question


@dataclass
class MCQDoc:
    question: str
    options: list[str]
    answer: str  # option letter
    images: list[Any]  # image references as the schema holds them: {"bytes", "path"} dicts, file names, PIL images
    meta: dict[str, Any] = field(default_factory=dict)


def _text(row: dict, column: str | None) -> str:
    value = row.get(column) if column else None
    return "" if value is None else str(value).strip()


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, dict):
        return value.get("bytes") is not None or bool(value.get("path"))
    return not (isinstance(value, float) and value != value)  # NaN from pandas


def yes_no(row: dict, spec: BenchmarkSpec) -> MCQDoc | str:
    """VQA-RAD, PathVQA, SLAKE: keep questions answered yes/no; they become 'A. yes / B. no' questions."""
    answer = _text(row, spec.fields["answer"]).lower().rstrip(".")
    if answer not in YES_NO:
        return "open question (answer is not yes/no)"
    image = row.get(spec.fields["image"])
    if not _present(image):
        return "no image"
    return MCQDoc(
        question=_text(row, spec.fields["question"]),
        options=list(YES_NO),
        answer=LETTERS[YES_NO.index(answer)],
        images=[image],
    )


def option_columns(row: dict, spec: BenchmarkSpec) -> MCQDoc | str:
    """PMC-VQA: options in columns 'Choice A'..'Choice D' (text prefixed 'A:'), letter in 'Answer_label' (later
    versions) or else the answer text, which must equal exactly one option."""
    options = [_CHOICE_PREFIX.sub("", _text(row, c), count=1).strip() for c in spec.fields["options"]]
    while options and not options[-1]:
        options.pop()  # fewer than four choices: trailing columns are empty
    if len(options) < 2 or any(not o for o in options):
        return "malformed options"
    label = _text(row, spec.fields.get("answer_label")).upper()
    if label in LETTERS[: len(options)] and len(label) == 1:
        letter = label
    else:
        want = _CHOICE_PREFIX.sub("", _text(row, spec.fields["answer"]), count=1).strip().lower()
        hits = [LETTERS[i] for i, o in enumerate(options) if o.lower() == want]
        if len(hits) != 1:
            return "answer matches no single option"
        letter = hits[0]
    image = _text(row, spec.fields["image"])
    if not image:
        return "no image"
    return MCQDoc(question=_text(row, spec.fields["question"]), options=options, answer=letter, images=[image])


def mmmu(row: dict, spec: BenchmarkSpec) -> MCQDoc | str:
    """MMMU: options are a Python-literal string list, the answer a letter, images in image_1..image_7, the subject
    is part of the id ('validation_Clinical_Medicine_12'). Keeps the medical subjects listed in the YAML."""
    qid = _text(row, spec.fields["id"])
    subject = qid.split("_", 1)[1].rsplit("_", 1)[0] if qid.count("_") >= 2 else ""
    if subject not in spec.extra.get("subjects", []):
        return "subject not in the medical set"
    try:
        options = ast.literal_eval(_text(row, spec.fields["options"]))
    except (ValueError, SyntaxError):
        return "malformed options"
    if not isinstance(options, list) or len(options) < 2:
        return "malformed options"
    options = [str(o).strip() for o in options]
    if any(_MMMU_IMAGE_TAG.search(o) for o in options):
        return "options are images"
    images = [row.get(f"image_{i}") for i in range(1, 8)]
    images = [im for im in images if _present(im)]
    if not images:
        return "no image"
    if len(images) > spec.max_images:
        return f"more than {spec.max_images} image(s)"
    answer = _text(row, spec.fields["answer"]).upper()
    if answer not in LETTERS[: len(options)] or len(answer) != 1:
        return "answer is not an option letter"
    question = _MMMU_IMAGE_TAG.sub(
        lambda m: "the image" if len(images) == 1 else f"image {m.group(1)}", _text(row, spec.fields["question"])
    )
    return MCQDoc(question=question, options=options, answer=answer, images=images, meta={"subject": subject})


def letter_dict(row: dict, spec: BenchmarkSpec) -> MCQDoc | str:
    """MedXpertQA MM: options as a {letter: text} dict, answer letter in 'label', image file names in 'images'; the
    question text ends with 'Answer Choices: (A) …', which is dropped because the prompt lists the options."""
    raw = row.get(spec.fields["options"])
    if not isinstance(raw, dict):
        return "malformed options"
    letters = sorted(k for k, v in raw.items() if v is not None and str(v).strip())
    if letters != list(LETTERS[: len(letters)]) or len(letters) < 2:
        return "malformed options"
    options = [str(raw[k]).strip() for k in letters]
    raw_images = row.get(spec.fields["image"])
    raw_images = (
        [raw_images] if isinstance(raw_images, (str, dict)) else list(raw_images if raw_images is not None else [])
    )
    images = [im for im in raw_images if _present(im)]
    if not images:
        return "no image"
    if len(images) > spec.max_images:
        return f"more than {spec.max_images} image(s)"
    answer = _text(row, spec.fields["answer"]).upper()
    if answer not in letters:
        return "answer is not an option letter"
    question = _ANSWER_CHOICES.sub("", _text(row, spec.fields["question"])).strip()
    meta = {k: row[k] for k in ("medical_task", "body_system", "question_type") if row.get(k) is not None}
    return MCQDoc(question=question, options=options, answer=answer, images=images, meta=meta)


@dataclass(frozen=True)
class Hook:
    fn: Callable[[dict, BenchmarkSpec], MCQDoc | str]
    settings: tuple[str, ...] = ()  # YAML keys the hook reads from spec.extra


HOOKS: dict[str, Hook] = {
    "yes_no": Hook(yes_no),
    "option_columns": Hook(option_columns),
    "mmmu": Hook(mmmu, settings=("subjects",)),
    "letter_dict": Hook(letter_dict),
}
