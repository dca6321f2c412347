"""PMC-VQA loader: the public CSV layout -> normalised MCQ records, and a quarantine for every bad row.

    from components.curate.pmcvqa import load_pmc_vqa
    loaded = load_pmc_vqa("data/pmc-vqa")            # finds train_2.csv / train.csv and the image folder
    loaded.records     # MCQRecord list, image = path relative to the root ("images/PMC1064097_F1.jpg")
    loaded.quarantine  # QuarantineEntry list: file, line, field, reason, value

Layouts read (headers matched case- and spacing-insensitively; extra columns such as `Caption` or an unnamed
index column are ignored):

    Figure_path, Question, Answer, Choice A, Choice B, Choice C, Choice D, Answer_label   (train.csv / train_2.csv)
    Figure_path, Question, Answer, Choice A, Choice B, Choice C, Choice D                 (first release: no
                                                                  Answer_label; Answer is "B:Focal uptake pattern"
                                                                  or the bare answer text)

Choices carry letter prefixes ("A:Diffuse uptake pattern", "A:MRI "): the prefix and surrounding spaces are
removed. The answer letter comes from `Answer_label` when present (and `Answer` must then agree with that
option), otherwise from the `Answer` prefix or by matching the `Answer` text to exactly one option.

A row is never dropped silently: a malformed CSV line, an empty question or option, duplicate options, an answer
that is not among the options, a missing or unreadable image, or a repeat of an earlier row's image and question
puts the row in the quarantine with the file, the line number (header = line 1), the field and the reason. Only
a missing *column* stops the load (every row would be bad), with an error naming the file and the column.
"""

from __future__ import annotations

import csv
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from components.common.io import sha256_file
from components.common.records import MCQRecord

CSV_CANDIDATES = ("train_2.csv", "train.csv")
IMAGE_DIR_CANDIDATES = ("images", "figures", "images_2")
CHOICE_COLUMNS = ("choice_a", "choice_b", "choice_c", "choice_d")
_ALIASES = {"anwser": "answer", "anwser_label": "answer_label", "answer label": "answer_label"}
_DISPLAY = {"figure_path": "Figure_path", "question": "Question", "choice_a": "Choice A", "choice_b": "Choice B",
            "choice_c": "Choice C", "choice_d": "Choice D"}
_PREFIX_RE = re.compile(r"^\s*([A-Da-d])\s*[:.)]\s*")


@dataclass
class QuarantineEntry:
    file: str
    line: int  # line number in the file (header = 1); the row's last line for multi-line records
    field: str  # column name as in the file, or "<line>" for a malformed line
    reason: str
    value: str = ""
    id: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PMCVQALoad:
    csv_path: Path
    root: Path
    records: list[MCQRecord] = field(default_factory=list)
    quarantine: list[QuarantineEntry] = field(default_factory=list)
    n_rows: int = 0
    has_answer_label: bool = False


def _norm_header(h: str) -> str:
    h = h.strip().lower()
    h = _ALIASES.get(h, h)
    return re.sub(r"[\s_]+", "_", h)


def _norm_text(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip().rstrip(".").strip().lower()


def find_csv(root: str | Path, csv_name: str | None = None) -> Path:
    """The CSV to read: `csv_name` under root if given, else train_2.csv, train.csv, or the only *.csv there."""
    root = Path(root)
    if csv_name:
        path = root / csv_name
        if not path.is_file():
            raise FileNotFoundError(f"PMC-VQA CSV not found: expected {path}")
        return path
    for name in CSV_CANDIDATES:
        if (root / name).is_file():
            return root / name
    found = sorted(root.glob("*.csv"))
    if len(found) == 1:
        return found[0]
    raise FileNotFoundError(
        f"{root}: no PMC-VQA CSV found (looked for {', '.join(CSV_CANDIDATES)}"
        + (f"; several CSVs present: {', '.join(p.name for p in found)} - name one with --pmc-vqa-csv" if found else "")
        + ")"
    )


def image_dirs(root: Path, image_dir: str | None = None) -> list[Path]:
    if image_dir:
        return [root / image_dir]
    return [root / d for d in IMAGE_DIR_CANDIDATES if (root / d).is_dir()] + [root]


def _resolve_image(root: Path, dirs: list[Path], figure: str) -> Path | None:
    for d in dirs:
        p = d / figure
        if p.is_file():
            return p
    return None


def _check_image(path: Path) -> str | None:
    """None if PIL can open and verify the image, else the reason."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as e:
        return f"unreadable image ({type(e).__name__}: {e})"
    return None


def load_pmc_vqa(
    root: str | Path,
    csv_name: str | None = None,
    image_dir: str | None = None,
    check_images: bool = True,
) -> PMCVQALoad:
    """Read a PMC-VQA CSV under `root` into MCQ records (4 options, answer letter) and a quarantine list."""
    from tqdm.auto import tqdm

    root = Path(root)
    path = find_csv(root, csv_name)
    dirs = image_dirs(root, image_dir)
    out = PMCVQALoad(csv_path=path, root=root)
    fname = str(path)
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.reader(f)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{path}: empty file (no header line)") from None
        cols = {_norm_header(h): i for i, h in enumerate(header) if h.strip()}
        names = {_norm_header(h): h.strip() for h in header if h.strip()}
        for need in ("figure_path", "question", *CHOICE_COLUMNS):
            if need not in cols:
                raise ValueError(f"{path}: line 1: missing column {_DISPLAY[need]!r} (header: {', '.join(h.strip() for h in header)})")
        if "answer" not in cols and "answer_label" not in cols:
            raise ValueError(f"{path}: line 1: missing column 'Answer' or 'Answer_label'; one of them names the right choice")
        out.has_answer_label = "answer_label" in cols
        stem = path.stem
        row_no = 0
        seen: dict[tuple[str, str], str] = {}
        rows = iter(reader)
        pbar = tqdm(desc=f"reading {path.name}", unit="row", disable=None)
        while True:
            try:
                row = next(rows)
            except StopIteration:
                break
            except csv.Error as e:
                row_no += 1
                out.quarantine.append(QuarantineEntry(fname, reader.line_num, "<line>", f"malformed CSV line ({e})"))
                continue
            pbar.update(1)
            if not any(c.strip() for c in row):
                continue  # blank line
            row_no += 1
            line = reader.line_num
            rid = f"pmcvqa-{stem}-{row_no:07d}"

            def bad(col: str, reason: str, value: str = "") -> None:
                out.quarantine.append(QuarantineEntry(fname, line, names.get(col, col), reason, value[:200], rid))

            if len(row) != len(header):
                bad("<line>", f"malformed CSV line: {len(row)} fields, header has {len(header)}", ",".join(row))
                continue
            get = lambda col: row[cols[col]] if col in cols else ""  # noqa: E731
            question = get("question").strip()
            if not question:
                bad("question", "empty question")
                continue
            options = []
            for j, col in enumerate(CHOICE_COLUMNS):
                raw = get(col)
                m = _PREFIX_RE.match(raw)
                text = raw[m.end():] if m and m.group(1).upper() == "ABCD"[j] else raw
                options.append(text.strip())
            empty = [CHOICE_COLUMNS[j] for j, o in enumerate(options) if not o]
            if empty:
                bad(empty[0], "empty option")
                continue
            normed = [_norm_text(o) for o in options]
            if len(set(normed)) != len(normed):
                bad("choice_a", f"duplicate options: {options}")
                continue
            answer_raw = get("answer")
            answer_text = answer_raw
            m = _PREFIX_RE.match(answer_raw)
            prefix_letter = None
            if m and (answer_raw[m.end():].strip() or not out.has_answer_label):
                prefix_letter, answer_text = m.group(1).upper(), answer_raw[m.end():]
            said = {_norm_text(answer_raw), _norm_text(answer_text)} - {""}  # with and without a letter prefix
            if prefix_letter is not None and not answer_text.strip():
                said = set()  # "B:" alone names the letter only
            label = get("answer_label").strip() if out.has_answer_label else ""
            if label:
                lm = re.fullmatch(r"([A-Da-d])\s*[:.)]?", label)
                if not lm:
                    bad("answer_label", "answer label is not one of A, B, C, D", label)
                    continue
                letter = lm.group(1).upper()
            elif prefix_letter is not None:
                letter = prefix_letter
            else:
                if not said:
                    bad("answer" if "answer" in cols else "answer_label", "no answer given")
                    continue
                hits = [j for j, o in enumerate(normed) if o in said]
                if len(hits) != 1:
                    bad("answer", "answer not among the options", answer_raw)
                    continue
                letter = "ABCD"[hits[0]]
            if said and normed["ABCD".index(letter)] not in said:
                bad("answer", f"answer not among the options: it does not match choice {letter} "
                    f"({options['ABCD'.index(letter)]!r})", answer_raw)
                continue
            figure = get("figure_path").strip()
            if not figure:
                bad("figure_path", "empty image path")
                continue
            img = _resolve_image(root, dirs, figure)
            if img is None:
                bad("figure_path", f"missing image (looked in {', '.join(str(d) for d in dirs)})", figure)
                continue
            if check_images:
                why = _check_image(img)
                if why:
                    bad("figure_path", why, figure)
                    continue
            dup_key = (sha256_file(img), _norm_text(question))
            if dup_key in seen:
                bad("question", f"duplicate question: same image and question as {seen[dup_key]}", question)
                continue
            seen[dup_key] = rid
            out.records.append(
                MCQRecord(
                    id=rid,
                    question=question,
                    options=options,
                    answer=letter,
                    image=img.relative_to(root).as_posix(),
                    task="pmc-vqa",
                    modality="none",  # set by the labeller
                    split="train",
                    source="pmc-vqa",
                    meta={"csv": path.name, "line": line, "figure_path": figure},
                ).validate(f"{path}: line {line}")
            )
        pbar.close()
        out.n_rows = row_no
    return out
