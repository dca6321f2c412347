"""CurateConfig: every knob of the curate step; CurateIO: its sources and outputs. Both are the launcher's flags
(components.common.cli)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from components.common.cli import check_nonempty
from components.common.medmnist_tasks import parse_flags

DEFAULT_LABELLER = "Qwen/Qwen2.5-VL-32B-Instruct"


OUTPUTS = ("medmnist_data", "diag_set", "eval_set", "sft_set", "rl_set", "rl_diag_set", "curation_report")
DEFAULT_BENCHMARKS = "pmc-vqa,mmmu-med,medxpertqa-mm,pathvqa,slake,vqa-rad"


@dataclass
class CurateIO:
    medmnist_root: str = field(metadata={"help": "local dir or s3:// URI holding MedMNIST-v2 <flag>.npz / <flag>_<size>.npz"})
    pmc_vqa_root: str = field(metadata={"help": "local dir or s3:// URI holding the PMC-VQA CSV and its image folder"})
    out_medmnist_data: str = field(metadata={"help": "output: the validated MedMNIST npz files + tasks.json"})
    out_diag_set: str = field(metadata={"help": "output: diagnosis MCQ set (class-balanced val splits)"})
    out_eval_set: str = field(metadata={"help": "output: evaluation MCQ set (class-balanced test splits)"})
    out_sft_set: str = field(metadata={"help": "output: proximal SFT pool (class-balanced train splits)"})
    out_rl_set: str = field(metadata={"help": "output: modality-balanced PMC-VQA RL set"})
    out_rl_diag_set: str = field(metadata={"help": "output: held-out PMC-VQA diagnosis slice (the distribution RL trains on), disjoint from rl_set"})
    out_curation_report: str = field(metadata={"help": "output: validation results, quarantine, cards, counts"})
    labeller_model: str = field(default=DEFAULT_LABELLER, metadata={"help": "VLM that labels PMC-VQA modality: HF id, dir or s3:// URI"})
    benchmarks_root: str = field(default="", metadata={"help": "local dir or s3:// URI with the evaluation benchmarks: their questions are kept out of rl_set and sft_set; empty = no benchmark check"})

    def __post_init__(self):
        check_nonempty(self, optional=("benchmarks_root",))

    def out(self, name: str) -> Path:
        """The output directory of artifact `name` (one of OUTPUTS)."""
        return Path(getattr(self, f"out_{name}"))


@dataclass
class CurateConfig:
    flags: str = field(default="all", metadata={"help": "comma-separated MedMNIST flags, or 'all' (the twelve 2D tasks)"})
    seed: int = field(default=0, metadata={"help": "seed for subsets, option shuffles and balancing"})
    rl_size: int = field(default=8000, metadata={"help": "questions in the modality-balanced PMC-VQA set (the paper: 8000)"})
    include_none: bool = field(default=False, metadata={"help": "give the 'none' modality (uncommon/ambiguous) a quota too"})
    diag_per_class: int = field(default=20, metadata={"help": "questions per class in the diagnosis set (val split)"})
    eval_per_class: int = field(default=50, metadata={"help": "questions per class in the evaluation set (test split)"})
    sft_per_class: int = field(default=500, metadata={"help": "questions per class in the proximal SFT pool (train split)"})
    size: int = field(default=0, metadata={"help": "MedMNIST image size 28/64/128/224; 0 = the largest file present per task"})
    pmc_vqa_csv: str = field(default="", metadata={"help": "CSV file name under pmc_vqa_root; empty = train_2.csv, train.csv or the only CSV"})
    pmc_vqa_image_dir: str = field(default="", metadata={"help": "image folder under pmc_vqa_root; empty = images/, figures/, images_2/ or the root"})
    label_batch_size: int = field(default=8, metadata={"help": "questions per labeller forward pass"})
    label_cache: str = field(default="", metadata={"help": "JSONL label cache; empty = $MEDBRIDGE_CACHE/curate/modality_labels.jsonl"})
    device: str = field(default="auto", metadata={"help": "labeller device: auto, cpu, cuda, cuda:N"})
    share_tolerance: float = field(default=0.02, metadata={"help": "allowed gap between a modality's share and its planned share"})
    image_min_side: int = field(default=8, metadata={"help": "smallest image width/height accepted by validation (px)"})
    image_max_side: int = field(default=8192, metadata={"help": "largest image width/height accepted by validation (px)"})
    cache_dir: str = field(default="", metadata={"help": "where s3:// sources are mirrored; empty = $MEDBRIDGE_CACHE/data"})
    target_diag_per_modality: int = field(default=25, metadata={"help": "questions per modality in the held-out PMC-VQA diagnosis slice (rl_diag_set), drawn before rl_set and disjoint from it"})
    benchmarks: str = field(default=DEFAULT_BENCHMARKS, metadata={"help": "benchmarks (with --benchmarks-root) whose questions are removed from rl_set and sft_set, comma-separated, 'all' or 'none'"})
    # -- Labeller throughput (components.curate.labeller). Labelling sharded over GPUs or pods runs before curation
    #    with `python -m components.curate.label --label-shard I --label-num-shards N`; curation reads those shards.
    label_fast: bool = field(default=True, metadata={"help": "label with the fast path: length-sorted batches of label_token_budget tokens, prompts and candidates in one forward, images preprocessed ahead of the GPU (false: the stock two-pass path, label_batch_size questions per batch)"})
    label_token_budget: int = field(default=16384, metadata={"help": "fast path: prompt tokens per labeller forward (rows x longest prompt, image tokens included)"})
    label_workers: int = field(default=-1, metadata={"help": "fast path: threads decoding and preprocessing images ahead of the GPU; -1 = auto (min(4, cores - 1) on GPU, 0 on CPU), 0 = in the labelling thread"})
    label_compile: bool = field(default=False, metadata={"help": "fast path: torch.compile the labeller's vision block and decoder layer (one graph each, dynamic shapes)"})
    label_liger_kernels: bool = field(default=False, metadata={"help": "fast path: Liger's fused RMSNorm / SiLU-mul / rotary kernels in the labeller's vision blocks and decoder layers (CUDA GPUs, needs the liger-kernel package)"})

    def __post_init__(self):
        try:
            parse_flags(self.flags)
        except ValueError as e:
            raise ValueError(f"flags={self.flags!r}: {e}") from None
        for name in ("rl_size", "diag_per_class", "eval_per_class", "sft_per_class", "label_batch_size",
                     "target_diag_per_modality"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1 (--{name.replace('_', '-')})")
        if self.size not in (0, 28, 64, 128, 224):
            raise ValueError(f"size={self.size} is not a MedMNIST-v2 size; use 28, 64, 128, 224 or 0 for the largest present (--size)")
        if not 0 <= self.share_tolerance < 1:
            raise ValueError(f"share_tolerance={self.share_tolerance} must be in [0, 1) (--share-tolerance)")
        if not 1 <= self.image_min_side <= self.image_max_side:
            raise ValueError(
                f"image_min_side={self.image_min_side}, image_max_side={self.image_max_side}: need 1 <= min <= max "
                "(--image-min-side / --image-max-side)"
            )
        if self.label_token_budget < 1:
            raise ValueError(f"label_token_budget={self.label_token_budget} must be >= 1 (--label-token-budget)")
        if self.label_workers < -1:
            raise ValueError(f"label_workers={self.label_workers} must be >= 0, or -1 for auto (--label-workers)")

        from components.common.benchmark import parse_benchmarks

        try:
            parse_benchmarks(self.benchmarks)
        except ValueError as e:
            raise ValueError(f"{e} (--benchmarks)") from None

    @property
    def flag_list(self) -> list[str]:
        return parse_flags(self.flags)


@dataclass
class SubsetIO:
    data: str = field(metadata={"help": "MCQ dataset directory to take questions from (e.g. the curate step's sft_set)"})
    out: str = field(metadata={"help": "output MCQ dataset directory (replaced atomically)"})

    def __post_init__(self):
        check_nonempty(self)


@dataclass
class SubsetConfig:
    tasks: str = field(default="", metadata={"help": "comma-separated tasks to keep (e.g. organamnist)"})
    max_records: int = field(default=0, metadata={"help": "at most this many questions, class-balanced over (task, answer) (0 = all)"})
    seed: int = field(default=0, metadata={"help": "seed of the class-balanced draw"})

    def __post_init__(self):
        if not [t for t in self.tasks.split(",") if t.strip()]:
            raise ValueError("tasks is empty; name the tasks to keep, e.g. --tasks organamnist")
        if self.max_records < 0:
            raise ValueError(f"max_records={self.max_records} must be >= 0 (--max-records)")
