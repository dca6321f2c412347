"""Read MedMNIST-v2 splits for the probe through medmnist's own dataset classes.

    imgs, labels = load_split("/data/medmnist_data", "pneumoniamnist", "train", size=224)

`medmnist.<PythonClass>(split=..., root=..., size=..., download=False)` loads `.imgs` / `.labels` from
`<root>/<flag>.npz` (28 px) or `<root>/<flag>_<size>.npz`. `len()` of those datasets is never called here: it asserts
the official sample count, which subsets and synthetic files do not have.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")
SIZES = (28, 64, 128, 224)


def npz_path(root: str | Path, flag: str, size: int) -> Path:
    return Path(root) / (f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz")


def resolve_size(root: str | Path, flag: str, image_size: int, npz_size: int = 0) -> int:
    """The MedMNIST file size to read: `npz_size` if given, else the file matching `image_size`, else the largest."""
    if npz_size:
        if not npz_path(root, flag, npz_size).is_file():
            raise FileNotFoundError(f"{npz_path(root, flag, npz_size)}: MedMNIST file not found (--npz-size {npz_size})")
        return npz_size
    if image_size in SIZES and npz_path(root, flag, image_size).is_file():
        return image_size
    present = [s for s in SIZES if npz_path(root, flag, s).is_file()]
    if not present:
        raise FileNotFoundError(
            f"MedMNIST file for {flag!r} not found: expected {npz_path(root, flag, 28)} or {flag}_<64|128|224>.npz in {root}"
        )
    return max(present)


def load_split(root: str | Path, flag: str, split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 N x H x W [x 3], labels int N x L) of one split, checked against medmnist.INFO[flag]."""
    import medmnist

    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not a MedMNIST split; choose one of {', '.join(SPLITS)}")
    if flag not in medmnist.INFO:
        raise ValueError(f"{flag!r} is not a MedMNIST flag")
    path = npz_path(root, flag, size)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: MedMNIST file not found (task {flag!r}, size {size})")
    info = medmnist.INFO[flag]
    cls = getattr(medmnist, info["python_class"])
    try:
        ds = cls(split=split, root=str(root), download=False, size=size)
    except KeyError as e:
        with np.load(path) as z:
            keys = sorted(z.files)
        raise ValueError(f"{path}: no array named {e.args[0].split()[0]!r} (keys present: {', '.join(keys)}); "
                         f"MedMNIST files hold {split}_images and {split}_labels") from None
    imgs, labels = np.asarray(ds.imgs), np.asarray(ds.labels)
    key = f"{split}_images"
    if imgs.dtype != np.uint8 or imgs.ndim not in (3, 4) or (imgs.ndim == 4 and imgs.shape[-1] not in (1, 3)):
        raise ValueError(f"{path}: {key} must be uint8 N x H x W or N x H x W x 3, got {imgs.dtype} {imgs.shape}")
    if labels.ndim == 1:
        labels = labels[:, None]
    n_labels = len(info["label"])
    want = n_labels if info["task"].startswith("multi-label") else 1
    if labels.shape != (imgs.shape[0], want):
        raise ValueError(f"{path}: {split}_labels has shape {labels.shape}, expected ({imgs.shape[0]}, {want})")
    labels = labels.astype(np.int64)
    hi = 1 if want > 1 else n_labels - 1
    if labels.size and (labels.min() < 0 or labels.max() > hi):
        bad = int(np.argwhere((labels < 0) | (labels > hi))[0][0])
        raise ValueError(f"{path}: {split}_labels row {bad} = {labels[bad].tolist()} is outside 0..{hi}")
    return imgs, labels
