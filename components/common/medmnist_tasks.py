"""The twelve 2D MedMNIST-v2 tasks MedBridge diagnoses, with their imaging modality and the paper's grouping.

Groups follow the MedBridgeRL paper's Tables 1-2: radiology, microscopy, visible-light photography.
`medvit_v2` is the vision-only reference probe accuracy and `qwen25vl_7b_probe` the frozen Qwen2.5-VL-7B
tower's probe accuracy, both from the paper's Table 1 (percent). Class names come from `medmnist.INFO`.
"""

from __future__ import annotations

from dataclasses import dataclass

GROUPS = ("radiology", "microscopy", "visible light")


@dataclass(frozen=True)
class MedMNISTTask:
    flag: str
    name: str  # short name used in tables
    modality: str  # one of components.common.records.MODALITIES
    group: str  # one of GROUPS
    medvit_v2: float
    qwen25vl_7b_probe: float


TASKS: dict[str, MedMNISTTask] = {
    t.flag: t
    for t in [
        MedMNISTTask("breastmnist", "Breast", "ultrasound", "radiology", 91.0, 80.95),
        MedMNISTTask("chestmnist", "Chest", "X-ray", "radiology", 96.7, 13.33),
        MedMNISTTask("pneumoniamnist", "Pneumonia", "X-ray", "radiology", 97.3, 92.52),
        MedMNISTTask("organamnist", "OrganA", "CT", "radiology", 97.3, 85.27),
        MedMNISTTask("organcmnist", "OrganC", "CT", "radiology", 96.1, 79.31),
        MedMNISTTask("organsmnist", "OrganS", "CT", "radiology", 85.1, 65.70),
        MedMNISTTask("bloodmnist", "Blood", "microscopy", "microscopy", 98.7, 96.19),
        MedMNISTTask("pathmnist", "Path", "microscopy", "microscopy", 97.1, 89.12),
        MedMNISTTask("tissuemnist", "Tissue", "microscopy", "microscopy", 71.6, 48.26),
        MedMNISTTask("dermamnist", "Derma", "dermatology", "visible light", 81.7, 65.22),
        MedMNISTTask("octmnist", "OCT", "OCT", "visible light", 95.2, 84.30),
        MedMNISTTask("retinamnist", "Retina", "none", "visible light", 57.8, 44.00),
    ]
}

# Where a task's multiple-choice form is MedBridge's own design rather than the paper's (reports mark these).
QUESTION_FORMS = {
    "chestmnist": "question form ours: ChestMNIST is multi-label; each question lists ONE finding present in the image "
    "and three findings absent from it ('which one of these findings is present?'); images without a finding are "
    "not asked about",
}

# The demo profile's tasks: one per group and the paper's transfer pairs (OrganA -> OrganC, Pneumonia, Path, OCT).
DEMO_FLAGS = ("pneumoniamnist", "organamnist", "organcmnist", "pathmnist", "octmnist", "dermamnist")


def get_task(flag: str) -> MedMNISTTask:
    if flag not in TASKS:
        raise ValueError(f"unknown MedMNIST task {flag!r}; choose from {', '.join(TASKS)}")
    return TASKS[flag]


def parse_flags(flags: str | list[str] | tuple[str, ...]) -> list[str]:
    """'a,b' or ['a', 'b'] or 'all' -> validated list of flags, in the given order, without repeats."""
    if isinstance(flags, str):
        items = list(TASKS) if flags.strip() == "all" else [f.strip() for f in flags.split(",") if f.strip()]
    else:
        items = list(flags)
    if not items:
        raise ValueError("no MedMNIST task given; pass comma-separated flags such as 'pneumoniamnist,octmnist' or 'all'")
    out: list[str] = []
    for f in items:
        get_task(f)
        if f not in out:
            out.append(f)
    return out
