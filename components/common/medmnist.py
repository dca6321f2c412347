"""MedMNIST-v2 files, read through medmnist's own dataset classes and checked; shared by curate and probe.

    data = load_split("data/medmnist", "organamnist", "test", size=224)    # Split(imgs, labels, class_names, ...)
    size = resolve_size("data/medmnist", "organamnist", explicit=0, prefer=224)

Files are `<root>/<flag>.npz` (28 px) or `<root>/<flag>_<size>.npz` (64/128/224) with `{split}_images` (uint8,
N x H x W or N x H x W x 3) and `{split}_labels` (N x 1, or N x 14 for chestmnist). Data is read THROUGH
`medmnist.<python_class>(split, root, size, download=False)`; its `len()` asserts the official sample count, so the
arrays the class loads (`ds.imgs`, `ds.labels`) are used instead and subsets and synthetic files open too.
medmnist's bare errors become errors that name the file, the split, the row and the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.common.medmnist_tasks import get_task

SPLITS = ("train", "val", "test")
SIZES = (28, 64, 128, 224)


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


def resolve_size(root: str | Path, flag: str, *, explicit: int = 0, prefer: int | None = None) -> int:
    """Which file of a task to read: `explicit` if given (it must exist), else `prefer` if that file exists, else the
    largest size present. Errors name the file that was expected."""
    if explicit:
        path = npz_path(root, flag, explicit)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: MedMNIST file for {flag!r} at {explicit} px not found")
        return explicit
    if prefer in SIZES and npz_path(root, flag, prefer).is_file():
        return prefer
    present = available_sizes(root, flag)
    if not present:
        raise FileNotFoundError(
            f"MedMNIST file for {flag!r} not found: expected {npz_path(root, flag, 28)} or {flag}_<64|128|224>.npz in {root}"
        )
    return max(present)
