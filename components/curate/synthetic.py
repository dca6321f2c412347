"""Synthetic stand-ins for the raw curation sources, written in the sources' real file formats.

    from components.curate.synthetic import write_synthetic_medmnist, write_synthetic_pmc_vqa
    write_synthetic_medmnist("runs/demo/medmnist", ["pneumoniamnist", "octmnist"])   # <flag>.npz, MedMNIST-v2 keys
    write_synthetic_pmc_vqa("runs/demo/pmc-vqa", n=200)                              # train.csv + images/

They exist for the demo profile and the tests: the pipeline reads them through exactly the code that reads the
real MedMNIST-v2 npz files and the real PMC-VQA CSV. Each root gets a lineage record marked synthetic
(`components.common.lineage`), so every artifact built from it is marked synthetic too. Nothing learned or measured on
these files is a medical result.

MedMNIST images carry class-dependent patterns (stripe orientation and frequency, a blob whose position and colour
depend on the class, plus noise), so that a tiny model or a linear probe has something learnable to find.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from components.common.io import atomic_write_bytes, atomic_write_text
from components.common.lineage import write_lineage

DEFAULT_N_PER_CLASS = {"train": 12, "val": 4, "test": 4}
SPLITS = ("train", "val", "test")
PMC_VQA_CSV = "train.csv"
PMC_VQA_COLUMNS = ["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D", "Answer_label"]

# Question templates per imaging modality (the labeller's categories); "none" = figures without a clear modality.
_PMC_TEMPLATES = {
    "MRI": [
        ("What sequence is shown in this brain MRI?", ["T2-weighted", "T1-weighted", "FLAIR", "DWI"]),
        ("Which structure shows high signal on the MRI scan?", ["Hippocampus", "Cerebellum", "Pons", "Thalamus"]),
    ],
    "CT": [
        ("What does the contrast-enhanced CT image of the abdomen show?", ["Liver lesion", "Renal cyst", "Splenic infarct", "Normal findings"]),
        ("Where is the mass located on the axial CT scan?", ["Right lung", "Left lung", "Mediastinum", "Pleura"]),
    ],
    "ultrasound": [
        ("What is seen in the ultrasound image of the thyroid?", ["Hypoechoic nodule", "Cyst", "Calcification", "Normal gland"]),
        ("What does the transvaginal ultrasound show?", ["Ovarian cyst", "Fibroid", "Ectopic pregnancy", "Normal uterus"]),
    ],
    "X-ray": [
        ("What abnormality is visible on the chest X-ray?", ["Pleural effusion", "Pneumothorax", "Cardiomegaly", "No abnormality"]),
        ("Which bone is fractured in the radiograph?", ["Radius", "Ulna", "Humerus", "Scaphoid"]),
    ],
    "microscopy": [
        ("What staining was used in the histology image?", ["H&E", "PAS", "Masson trichrome", "Immunofluorescence"]),
        ("What cell type dominates the microscopy field?", ["Lymphocytes", "Neutrophils", "Macrophages", "Plasma cells"]),
    ],
    "dermatology": [
        ("What is the most likely diagnosis of the skin lesion in the dermoscopy image?", ["Melanoma", "Nevus", "Basal cell carcinoma", "Seborrheic keratosis"]),
        ("What pattern is seen on the clinical photograph of the skin?", ["Reticular", "Globular", "Homogeneous", "Starburst"]),
    ],
    "OCT": [
        ("What does the optical coherence tomography (OCT) scan of the macula show?", ["Subretinal fluid", "Drusen", "Macular hole", "Normal retina"]),
        ("Which retinal layer is thickened on the OCT image?", ["Nerve fiber layer", "Outer nuclear layer", "RPE", "Choroid"]),
    ],
    "none": [
        ("What does the bar graph in the figure compare?", ["Survival rates", "Dose levels", "Gene expression", "Cell counts"]),
        ("What is represented by the red line in the figure?", ["Control group", "Treated group", "Baseline", "Threshold"]),
    ],
}


def _npz_name(flag: str, size: int) -> str:
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def _class_pattern(c: int, k: int, size: int, n: int, rng: np.random.Generator, n_channels: int) -> np.ndarray:
    """`n` images (n×size×size[×3], uint8) of class `c` of `k`: class-specific stripes and blob, plus noise."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    theta = np.pi * c / max(k, 1)
    freq = 2.0 + 2.0 * (c % 3)
    stripes = np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)))
    phi = 2 * np.pi * c / max(k, 1)
    cx, cy = 0.5 + 0.28 * np.cos(phi), 0.5 + 0.28 * np.sin(phi)
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 0.09**2))
    base = 110.0 + 45.0 * stripes + 90.0 * blob  # size×size
    jitter = rng.normal(0.0, 8.0, size=(n, 1, 1))  # per-image brightness
    imgs = base[None] + jitter + rng.normal(0.0, 18.0, size=(n, size, size))
    if n_channels == 3:
        gains = np.array([1.0 + 0.3 * np.cos(phi), 1.0 + 0.3 * np.cos(phi + 2.1), 1.0 + 0.3 * np.cos(phi + 4.2)])
        imgs = imgs[..., None] * gains[None, None, None, :]
    return np.clip(imgs, 0, 255).astype(np.uint8)


def _mark_synthetic(root: Path, artifact: str, text: str, params: dict) -> None:
    write_lineage(
        root, step="synthetic-data", artifact=artifact, params=params, synthetic=True,
        summary=f"SYNTHETIC {text} Written by components.curate.synthetic for the demo profile and tests: the files "
        "follow the real source's format, their content is generated; nothing computed from them is a medical result.",
    )


def write_synthetic_medmnist(
    root: str | Path,
    flags: list[str] | tuple[str, ...],
    n_per_class: dict[str, int] | None = None,
    size: int = 28,
    seed: int = 0,
) -> Path:
    """Write `<root>/<flag>.npz` (28 px) or `<root>/<flag>_<size>.npz` for each flag in the MedMNIST-v2 layout.

    `n_per_class` maps split -> images per class (default DEFAULT_N_PER_CLASS). ChestMNIST is multi-label: each
    image has one primary finding (n_per_class images per finding) plus, at random, a second one; an extra 10%
    of images have no finding at all, as in the real data.
    """
    from medmnist import INFO

    if size not in (28, 64, 128, 224):
        raise ValueError(f"size={size}: MedMNIST-v2 2D files come in sizes 28, 64, 128, 224")
    counts = {**DEFAULT_N_PER_CLASS, **(n_per_class or {})}
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for fi, flag in enumerate(flags):
        if flag not in INFO:
            raise ValueError(f"unknown MedMNIST flag {flag!r}")
        info = INFO[flag]
        k = len(info["label"])
        n_channels = info["n_channels"]
        multilabel = info["task"].startswith("multi-label")
        rng = np.random.default_rng([seed, fi])
        arrays: dict[str, np.ndarray] = {}
        for split in SPLITS:
            n = counts[split]
            imgs, labels = [], []
            for c in range(k):
                imgs.append(_class_pattern(c, k, size, n, rng, n_channels))
                if multilabel:
                    lab = np.zeros((n, k), dtype=np.uint8)
                    lab[:, c] = 1
                    extra = rng.integers(0, k, size=n)
                    second = rng.random(n) < 0.3
                    lab[np.arange(n)[second], extra[second]] = 1
                    labels.append(lab)
                else:
                    labels.append(np.full((n, 1), c, dtype=np.uint8))
            if multilabel:  # "no finding" images
                n_norm = max(1, (n * k) // 10)
                imgs.append(_class_pattern(k, k + 1, size, n_norm, rng, n_channels))
                labels.append(np.zeros((n_norm, k), dtype=np.uint8))
            x, y = np.concatenate(imgs), np.concatenate(labels)
            order = rng.permutation(len(x))
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = x[order], y[order]
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(root / _npz_name(flag, size), buf.getvalue())
    _mark_synthetic(
        root, "medmnist_root",
        f"MedMNIST-v2-format npz files for {', '.join(flags)} at {size} px, seed {seed}, images per class "
        f"{counts}; class-dependent stripe/blob patterns plus noise.",
        {"flags": list(flags), "size": size, "seed": seed, "n_per_class": counts},
    )
    return root


def _modality_image(modality: str, rng: np.random.Generator, size: int = 64):
    """A small RGB PIL image whose look depends on the modality (grey for radiology, colour for the others)."""
    from PIL import Image

    mods = list(_PMC_TEMPLATES)
    m = mods.index(modality)
    arr = _class_pattern(m, len(mods), size, 1, rng, 3)[0]
    if modality in ("MRI", "CT", "X-ray", "ultrasound", "OCT"):
        arr = np.repeat(arr.mean(axis=-1, keepdims=True), 3, axis=-1).astype(np.uint8)
    return Image.fromarray(arr, mode="RGB")


def write_synthetic_pmc_vqa(root: str | Path, n: int = 200, seed: int = 0) -> Path:
    """Write `<root>/train.csv` in the PMC-VQA layout and `<root>/images/*.jpg`; questions span all modalities.

    Choices carry the public files' letter prefixes ("A:MRI "), `Answer` is the answer text and `Answer_label`
    its letter, as in PMC-VQA's train.csv.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    mods = list(_PMC_TEMPLATES)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(PMC_VQA_COLUMNS)
    for i in range(n):
        modality = mods[i % len(mods)]
        templates = _PMC_TEMPLATES[modality]
        question, choices = templates[int(rng.integers(len(templates)))]
        order = rng.permutation(len(choices))
        options = [choices[j] for j in order]
        answer_idx = int(rng.integers(len(options)))
        fig = f"PMC{100000 + i}_F{1 + i % 3}.jpg"
        im = _modality_image(modality, rng)
        with io.BytesIO() as b:
            im.save(b, format="JPEG", quality=90)
            atomic_write_bytes(root / "images" / fig, b.getvalue())
        letters = "ABCD"
        # The public files have a trailing space after some choices ("A:MRI "): keep that quirk.
        row_choices = [f"{letters[j]}:{opt}{' ' if (i + j) % 2 else ''}" for j, opt in enumerate(options)]
        writer.writerow([fig, question, options[answer_idx], *row_choices, letters[answer_idx]])
    atomic_write_text(root / PMC_VQA_CSV, buf.getvalue())
    _mark_synthetic(
        root, "pmc_vqa_root",
        f"PMC-VQA-layout {PMC_VQA_CSV} with {n} generated questions over all modalities and images/, seed {seed}.",
        {"n": n, "seed": seed},
    )
    return root
