"""Small per-benchmark hooks: one public row -> one closed-form multiple-choice question (`MCQDoc`), an open-ended
question (`OpenDoc`, scored apart when the YAML says `open_ended: true`, else left out with its reason), or the
reason it is left out (a `str`).

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
    from components.common.benchmark import BenchmarkSpec

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


@dataclass
class OpenDoc:
    question: str
    answer: str  # the reference answer text
    images: list[Any]
    reason: str  # why it is not multiple choice (the exclusion reason when open questions are not scored)
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


def yes_no(row: dict, spec: BenchmarkSpec) -> MCQDoc | OpenDoc | str:
    """VQA-RAD, PathVQA, SLAKE: questions answered yes/no become 'A. yes / B. no' questions; the others are open
    questions (their reference answer is the text)."""
    answer = _text(row, spec.fields["answer"]).lower().rstrip(".")
    image = row.get(spec.fields["image"])
    if answer not in YES_NO:
        if not answer:
            return "no answer"
        if not _present(image):
            return "no image"
        return OpenDoc(_text(row, spec.fields["question"]), _text(row, spec.fields["answer"]), [image],
                       "open question (answer is not yes/no)")
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


_OPTION_LINE = re.compile(r"^\s*\(?([A-Z])\s*[.):]\s*(.*)$")


def parse_options_text(raw: Any) -> list[str] | None:
    """Options as MedVLThinker-Eval stores them: one string "A. first\nB. second" (a line not starting with the next
    letter continues the option before it), a JSON / Python-literal {"A": ..} dict in a string, a dict or a list.
    None when they cannot be read as options A, B, C, ... in order."""
    import json

    if isinstance(raw, str):
        text = raw.strip()
        if text.startswith("{") or text.startswith("["):
            try:
                raw = json.loads(text)
            except ValueError:
                try:
                    raw = ast.literal_eval(text)
                except (ValueError, SyntaxError):
                    return None
        else:
            options: list[str] = []
            for line in text.splitlines():
                m = _OPTION_LINE.match(line)
                want = LETTERS[len(options)] if len(options) < len(LETTERS) else None
                if m and m.group(1) == want:
                    options.append(m.group(2).strip())
                elif options and line.strip():
                    options[-1] = f"{options[-1]} {line.strip()}"
                elif line.strip():
                    return None
            return options if len(options) >= 2 and all(options) else None
    if isinstance(raw, dict):
        keys = sorted(str(k).strip().upper() for k in raw)
        if keys != list(LETTERS[: len(keys)]):
            return None
        by = {str(k).strip().upper(): v for k, v in raw.items()}
        raw = [by[k] for k in keys]
    if isinstance(raw, (list, tuple)):
        options = [str(o).strip() for o in raw]
        return options if len(options) >= 2 and all(options) else None
    return None


def options_string(row: dict, spec: BenchmarkSpec) -> MCQDoc | OpenDoc | str:
    """MedVLThinker-Eval (UCSC-VLAA/MedVLThinker-Eval, the paper code's evaluation set): `images` a list, `question`,
    `options` one string "A. ...\nB. ...", `answer_label` the letter, `answer` the text, `dataset_name` the benchmark.
    A row without options or answer label is an open question with `answer` as its reference."""
    raw_images = row.get(spec.fields["image"])
    raw_images = [raw_images] if isinstance(raw_images, (str, dict)) or hasattr(raw_images, "convert") else list(
        raw_images if raw_images is not None else [])
    images = [im for im in raw_images if _present(im)]
    if not images:
        return "no image"
    if len(images) > spec.max_images:
        return f"more than {spec.max_images} image(s)"
    question = _text(row, spec.fields["question"])
    label = _text(row, spec.fields.get("answer_label")).upper()
    raw_options = row.get(spec.fields["options"])
    if not label and (raw_options is None or not str(raw_options).strip()):
        answer = _text(row, spec.fields["answer"])
        if not answer:
            return "no answer"
        return OpenDoc(question, answer, images, "open question (no options)")
    options = parse_options_text(raw_options)
    if options is None:
        return "malformed options"
    if len(label) != 1 or label not in LETTERS[: len(options)]:
        return "answer is not an option letter"
    return MCQDoc(question=question, options=options, answer=label, images=images)


@dataclass(frozen=True)
class Hook:
    fn: Callable[[dict, BenchmarkSpec], MCQDoc | str]
    settings: tuple[str, ...] = ()  # YAML keys the hook reads from spec.extra


HOOKS: dict[str, Hook] = {
    "yes_no": Hook(yes_no),
    "option_columns": Hook(option_columns),
    "mmmu": Hook(mmmu, settings=("subjects",)),
    "letter_dict": Hook(letter_dict),
    "options_string": Hook(options_string),
}
