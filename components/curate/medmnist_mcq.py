"""MedMNIST-v2 classification samples as multiple-choice questions (all twelve 2D tasks).

    from components.curate.medmnist_mcq import build_medmnist_mcq
    recs = build_medmnist_mcq("data/medmnist", "organamnist", "test", out_dir, per_class=50, size=224, seed=0)

Splits are read and checked by `components.common.medmnist.load_split` (medmnist's own dataset classes).

Single-label tasks (binary, multi-class, ordinal): the options are all of the task's class names
(`medmnist.INFO[flag]['label']`) in an order shuffled per question with a seed derived from (seed, flag, split,
row); letters run as far as needed (A-K for the 11 OrganA/C/S classes). The answer is the letter of the image's
class.

ChestMNIST is multi-label (14 findings, any number present). Its single-answer form is:
"Which one of these findings is present in this chest X-ray?" with exactly ONE finding that is positive for the
image among the options (the answer) and the other options drawn only from findings that are NEGATIVE for the
image (CHEST_N_OPTIONS options in all), so exactly one option is correct. For class balancing the "class" of a
question is its answer finding: an image positive for several findings can serve any one of them, and its other
positive findings never appear among its options. Images with no positive finding ("no finding") are skipped:
"normal vs finding" is a different question with a different answer space, and mixing it in would change the
task's chance level.

Images are written as PNG files under `<out_dir>/images/<flag>/`; records follow components.common.records.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from components.common.medmnist import Split, load_split
from components.common.medmnist_tasks import get_task
from components.common.records import LETTERS, MCQRecord

CHEST_N_OPTIONS = 4

QUESTIONS = {
    "breastmnist": "What does this breast ultrasound image show?",
    "chestmnist": "Which one of these findings is present in this chest X-ray?",
    "pneumoniamnist": "What does this pediatric chest X-ray show?",
    "organamnist": "Which organ is shown in this abdominal CT image (axial view)?",
    "organcmnist": "Which organ is shown in this abdominal CT image (coronal view)?",
    "organsmnist": "Which organ is shown in this abdominal CT image (sagittal view)?",
    "bloodmnist": "Which type of blood cell is shown in this microscopy image?",
    "pathmnist": "Which tissue type is shown in this colorectal histology image?",
    "tissuemnist": "Which kidney cell type is shown in this microscopy image?",
    "dermamnist": "What is the diagnosis of the skin lesion in this dermatoscopic image?",
    "octmnist": "What does this retinal OCT scan show?",
    "retinamnist": "What is the diabetic retinopathy severity grade (0 = none to 4 = proliferative) of this retinal fundus image?",
}


def _rng(seed: int, *parts: object) -> np.random.Generator:
    digest = hashlib.sha256(":".join(map(str, (seed, *parts))).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def class_members(data: Split) -> dict[int, np.ndarray]:
    """Row indices per class (per finding for multi-label tasks; rows with no finding belong to none)."""
    if data.multilabel:
        return {c: np.flatnonzero(data.labels[:, c] == 1) for c in range(len(data.class_names))}
    return {c: np.flatnonzero(data.labels[:, 0] == c) for c in range(len(data.class_names))}


def balanced_rows(data: Split, per_class: int | None, seed: int) -> list[tuple[int, int]]:
    """(row, class) pairs: `per_class` rows drawn per class with a seed (all rows of a class when it has fewer;
    every row when per_class is None). For multi-label tasks a row is used at most once, rarest finding first."""
    members = class_members(data)
    out: list[tuple[int, int]] = []
    used: set[int] = set()
    # Multi-label: the rarest findings pick their images first, so common findings do not use them up.
    order = sorted(members, key=lambda c: (len(members[c]), c)) if data.multilabel else list(members)
    for c in order:
        rows = members[c]
        rows = np.array([r for r in rows if r not in used], dtype=np.int64)
        if per_class is not None and len(rows) > per_class:
            rows = np.sort(_rng(seed, data.flag, data.split, "class", c).choice(rows, size=per_class, replace=False))
        out += [(int(r), c) for r in rows]
        if data.multilabel:
            used.update(int(r) for r in rows)
    return sorted(out)


def mcq_options(data: Split, row: int, cls: int, seed: int) -> tuple[list[str], str]:
    """(options, answer letter) for one row whose answer class is `cls`, shuffled with a per-question seed."""
    rng = _rng(seed, data.flag, data.split, row)
    if data.multilabel:
        negatives = [c for c in range(len(data.class_names)) if data.labels[row, c] == 0]
        k = min(CHEST_N_OPTIONS - 1, len(negatives))
        choice = [cls, *(int(c) for c in rng.choice(negatives, size=k, replace=False))]
    else:
        choice = list(range(len(data.class_names)))
    order = [choice[i] for i in rng.permutation(len(choice))]
    return [data.class_names[c] for c in order], LETTERS[order.index(cls)]


def build_medmnist_mcq(
    root: str | Path,
    flag: str,
    split: str,
    out_dir: str | Path,
    per_class: int | None = None,
    size: int = 28,
    seed: int = 0,
) -> list[MCQRecord]:
    """MCQ records for a class-balanced subset of one split; PNG images written under `<out_dir>/images/<flag>/`."""
    from PIL import Image

    if per_class is not None and per_class < 1:
        raise ValueError(f"per_class={per_class} must be >= 1 (or None for every row)")
    task = get_task(flag)
    data = load_split(root, flag, split, size)
    img_dir = Path(out_dir) / "images" / flag
    img_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for row, cls in balanced_rows(data, per_class, seed):
        options, answer = mcq_options(data, row, cls, seed)
        rel = f"images/{flag}/{split}_{row:06d}.png"
        Image.fromarray(data.imgs[row]).save(Path(out_dir) / rel)
        meta = {"group": task.group, "label": cls, "label_name": data.class_names[cls], "row": row,
                "npz": data.path.name, "size": size}
        if data.multilabel:
            meta["positives"] = [data.class_names[c] for c in np.flatnonzero(data.labels[row] == 1)]
        records.append(
            MCQRecord(
                id=f"{flag}-{split}-{row:06d}",
                question=QUESTIONS[flag],
                options=options,
                answer=answer,
                image=rel,
                task=flag,
                modality=task.modality,
                split=split,
                source="medmnist",
                meta=meta,
            ).validate(f"{flag} {split} row {row}")
        )
    return records
