"""MedMNIST-v2 classification samples as multiple-choice questions (all twelve 2D tasks).

    from components.common.medmnist_mcq import build_medmnist_mcq
    recs = build_medmnist_mcq("data/medmnist", "organamnist", "test", out_dir, per_class=50, size=224, seed=0)

Data is read THROUGH medmnist's own dataset classes (`medmnist.<python_class>(split, root, size, download=False)`)
from `<root>/<flag>.npz` (28 px) or `<root>/<flag>_<size>.npz`. medmnist's `len()` asserts the split has exactly
the official number of samples; MedBridge reads the arrays the class loads (`ds.imgs`, `ds.labels`) instead, so
subsets and the synthetic demo files open too. medmnist's bare errors become errors that name the file, the split,
the row and the field (`load_split`).

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.common.medmnist_tasks import get_task
from components.common.records import LETTERS, MCQRecord

SPLITS = ("train", "val", "test")
SIZES = (28, 64, 128, 224)
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


def npz_path(root: str | Path, flag: str, size: int = 28) -> Path:
    """Where medmnist expects the file: `<root>/<flag>.npz` for 28 px, `<root>/<flag>_<size>.npz` otherwise."""
    if size not in SIZES:
        raise ValueError(f"size={size}: MedMNIST-v2 2D files come in sizes {', '.join(map(str, SIZES))}")
    return Path(root) / (f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz")


def available_sizes(root: str | Path, flag: str) -> list[int]:
    return [s for s in SIZES if npz_path(root, flag, s).is_file()]


@dataclass
class Split:
    flag: str
    split: str
    size: int
    path: Path
    imgs: np.ndarray  # N×H×W or N×H×W×3, uint8
    labels: np.ndarray  # N×1 (single-label) or N×C (multi-label)
    class_names: list[str]

    @property
    def multilabel(self) -> bool:
        return self.labels.shape[1] > 1


def _info(flag: str) -> dict:
    from medmnist import INFO

    get_task(flag)
    return INFO[flag]


def load_split(root: str | Path, flag: str, split: str, size: int = 28) -> Split:
    """Load one split through medmnist's dataset class and check it; errors name the file, split, row and field."""
    import medmnist

    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not a MedMNIST split; choose one of {', '.join(SPLITS)}")
    info = _info(flag)
    path = npz_path(root, flag, size)
    if not path.is_file():
        raise FileNotFoundError(
            f"MedMNIST file for {flag!r} at {size} px not found: expected {path} "
            f"(medmnist names files <flag>.npz for 28 px and <flag>_<size>.npz for 64/128/224)"
        )
    try:
        with np.load(path) as z:
            keys = set(z.files)
    except Exception as e:  # not a zip / truncated download
        raise ValueError(f"{path}: not a readable npz file ({type(e).__name__}: {e})") from None
    for key in (f"{split}_images", f"{split}_labels"):
        if key not in keys:
            raise ValueError(f"{path}: missing key {key!r} (has {', '.join(sorted(keys)) or 'no keys'})")
    cls = getattr(medmnist, info["python_class"])
    ds = cls(split=split, root=str(path.parent), size=size, download=False)
    imgs, labels = np.asarray(ds.imgs), np.asarray(ds.labels)  # not len(ds): it asserts the official sample count
    where = f"{path}: split {split!r}"
    n_classes = len(info["label"])
    n_channels = info["n_channels"]
    want = (size, size) if n_channels == 1 else (size, size, 3)
    if imgs.ndim != 1 + len(want) or tuple(imgs.shape[1:]) != want:
        raise ValueError(
            f"{where}: field '{split}_images' has shape {tuple(imgs.shape)}; expected N×{'×'.join(map(str, want))} "
            f"for {flag} ({n_channels} channel{'s' if n_channels > 1 else ''}, {size} px)"
        )
    if imgs.dtype != np.uint8:
        raise ValueError(f"{where}: field '{split}_images' has dtype {imgs.dtype}; expected uint8")
    multilabel = info["task"].startswith("multi-label")
    want_cols = n_classes if multilabel else 1
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2 or labels.shape[1] != want_cols:
        raise ValueError(f"{where}: field '{split}_labels' has shape {tuple(labels.shape)}; expected N×{want_cols} for {flag}")
    if len(labels) != len(imgs):
        raise ValueError(f"{where}: {len(imgs)} images but {len(labels)} labels")
    if multilabel:
        bad = np.argwhere((labels != 0) & (labels != 1))
        if len(bad):
            r, c = bad[0]
            raise ValueError(f"{where}: row {r}: field '{split}_labels' column {c} is {labels[r, c]}; multi-label values must be 0 or 1")
    else:
        bad = np.flatnonzero((labels[:, 0] < 0) | (labels[:, 0] >= n_classes))
        if len(bad):
            r = int(bad[0])
            raise ValueError(
                f"{where}: row {r}: field '{split}_labels' is {labels[r, 0]}; {flag} has {n_classes} classes (0-{n_classes - 1})"
            )
    names = [info["label"][str(i)] for i in range(n_classes)]
    return Split(flag, split, size, path, imgs, labels.astype(np.int64), names)


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
    synthetic: bool = False,
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
                synthetic=synthetic,
                meta=meta,
            ).validate(f"{flag} {split} row {row}")
        )
    return records
