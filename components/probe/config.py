"""ProbeConfig: every knob of the vision-probe step; ProbeIO: its inputs and outputs. Both are the launcher's flags
(components.common.cli)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from components.common.cli import check_nonempty
from components.common.medmnist_tasks import parse_flags

POOLINGS = ("mean", "max")
NPZ_SIZES = (0, 28, 64, 128, 224)


@dataclass
class ProbeIO:
    model: str = field(metadata={"help": "Qwen2.5-VL-family checkpoint whose vision tower is probed: HF id, dir or s3:// URI"})
    data: str = field(metadata={"help": "medmnist_data directory (MedMNIST-v2 <flag>.npz / <flag>_<size>.npz files)"})
    out: str = field(metadata={"help": "probe_report output directory (replaced atomically)"})
    metrics_json: str = field(default="", metadata={"help": "also write the summary metrics JSON here (for kfp Metrics)"})

    def __post_init__(self):
        check_nonempty(self, optional=("metrics_json",))


@dataclass
class ProbeConfig:
    flags: str = field(default="all", metadata={"help": "comma-separated MedMNIST flags, or 'all' (the twelve 2D tasks)"})
    pooling: str = field(default="mean", metadata={"help": "pooling over the merged visual tokens: mean (the paper) or max"})
    image_size: int = field(default=224, metadata={"help": "square side the images are resized to before the tower (multiple of 28; the paper: 224)"})
    npz_size: int = field(default=0, metadata={"help": "which MedMNIST file to read: 28/64/128/224, or 0 = <flag>_<image_size>.npz if present, else the largest present"})
    batch_size: int = field(default=64, metadata={"help": "images per vision-tower forward"})
    num_workers: int = field(default=-1, metadata={"help": "processes running the checkpoint's image processor: 0 = in the main process, -1 = auto (0 on CPU, min(16, cores - 1) on GPU)"})
    max_per_split: int = field(default=0, metadata={"help": "cap on images per split (seeded random subset); 0 = every image"})
    epochs: int = field(default=20, metadata={"help": "linear-probe epochs (public code: 20)"})
    lr: float = field(default=0.1, metadata={"help": "SGD learning rate, cosine-annealed to 0 (public code: 0.1)"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    weight_decay: float = field(default=0.0, metadata={"help": "SGD weight decay"})
    probe_batch_size: int = field(default=256, metadata={"help": "feature vectors per linear-probe SGD step"})
    seed: int = field(default=0, metadata={"help": "seed for subsets, probe initialisation and shuffling"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N (bf16 on GPU, fp32 on CPU)"})
    fast_tower: bool = field(default=True, metadata={"help": "use the batched dense tower (components.probe.fast_tower) when every image has the same grid"})
    compile: bool = field(default=True, metadata={"help": "torch.compile the fast tower's block on CUDA (ignored on CPU)"})
    cache_dir: str = field(default="", metadata={"help": "feature cache directory; empty = $MEDBRIDGE_CACHE/probe_features (~/.cache/medbridge/probe_features)"})
    limit_fraction: float = field(default=0.8, metadata={"help": "perception-limited if probe accuracy < this fraction of the MedViT-V2 reference"})
    chance_margin: float = field(default=5.0, metadata={"help": "... or if probe accuracy <= chance (majority class) + this many points"})
    auc_threshold: float = field(default=70.0, metadata={"help": "multi-label tasks (ChestMNIST): perception-limited if the mean probe AUC (percent) is below this"})

    def __post_init__(self):
        try:
            parse_flags(self.flags)
        except ValueError as e:
            raise ValueError(f"flags={self.flags!r}: {e}") from None
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling={self.pooling!r} is not known; choose one of {', '.join(POOLINGS)} (--pooling)")
        if self.image_size < 28 or self.image_size % 28:
            raise ValueError(
                f"image_size={self.image_size} must be a positive multiple of 28 (patch 14 x merge 2), e.g. 224 or 56 (--image-size)"
            )
        if self.npz_size not in NPZ_SIZES:
            raise ValueError(f"npz_size={self.npz_size} is not a MedMNIST-v2 size; use 28, 64, 128, 224 or 0 (--npz-size)")
        for name in ("batch_size", "epochs", "probe_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1 (--{name.replace('_', '-')})")
        if self.num_workers < -1:
            raise ValueError(f"num_workers={self.num_workers} must be >= 0, or -1 for auto (--num-workers)")
        for name in ("max_per_split",):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0 (--{name.replace('_', '-')})")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr} must be > 0 (--lr)")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum={self.momentum} must be in [0, 1) (--momentum)")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay} must be >= 0 (--weight-decay)")
        if not 0 < self.limit_fraction <= 1:
            raise ValueError(f"limit_fraction={self.limit_fraction} must be in (0, 1] (--limit-fraction)")
        if not 50.0 <= self.auc_threshold <= 100.0:
            raise ValueError(f"auc_threshold={self.auc_threshold} must lie in [50, 100] percent (--auc-threshold)")
        if self.chance_margin < 0:
            raise ValueError(f"chance_margin={self.chance_margin} must be >= 0 percentage points (--chance-margin)")

    @property
    def flag_list(self) -> list[str]:
        return parse_flags(self.flags)

    def resolved_cache_dir(self) -> Path:
        from components.common.storage import cache_root

        return Path(self.cache_dir) if self.cache_dir else cache_root() / "probe_features"
