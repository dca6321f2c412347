"""Labelling launcher: the curate step's modality labelling on its own, sharded over GPUs or pods.

    # shard I of N, one per GPU or pod (a Kubernetes Indexed Job passes --label-shard $(JOB_COMPLETION_INDEX))
    python -m components.curate.label --pmc-vqa-root s3://medbridge-data/pmc-vqa \
        --labeller-model Qwen/Qwen2.5-VL-32B-Instruct --label-cache /cache/curate/modality_labels.jsonl \
        --label-shard 3 --label-num-shards 8

    # optional, once every shard is done: one consolidated cache file and the conflicting labels, if any
    python -m components.curate.label --label-cache /cache/curate/modality_labels.jsonl --merge

Shard I labels the questions whose cache key falls in shard I (a fixed function of the key: every pod, rerun and
record order agree) that no cache file holds yet, and appends them to its own file beside the cache,
`modality_labels.shard-0000I-of-0000N.jsonl`; an interrupted shard loses at most one batch and a rerun labels only
what is missing. Curation (`python -m components.curate --label-cache ...`) reads the main file and every shard
file beside it, merged deterministically (`components.curate.labeller.merge_labels`): it then labels nothing that a
shard labelled. `--merge` writes that merge into the main file (one line per key, sorted by key: the same bytes
whatever order the shards ran in) and reports keys that different files label differently.

Flags are the fields of LabelConfig (knobs; `--config FILE.yaml` sets them from a file) and LabelIO (sources), with
dashes for underscores; the labelling knobs mean what curate's knobs of the same name mean.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from components.common.cli import StepParser, check_nonempty, launch
from components.curate.config import DEFAULT_LABELLER

PROG = "python -m components.curate.label"


@dataclass
class LabelIO:
    pmc_vqa_root: str = field(default="", metadata={"help": "local dir or s3:// URI holding the PMC-VQA CSV and its image folder (not needed with --merge)"})
    labeller_model: str = field(default=DEFAULT_LABELLER, metadata={"help": "VLM that labels PMC-VQA modality: HF id, dir or s3:// URI"})

    def __post_init__(self):
        check_nonempty(self, optional=("pmc_vqa_root",))


@dataclass
class LabelConfig:
    label_shard: int = field(default=0, metadata={"help": "which shard this process labels, 0 <= shard < label_num_shards"})
    label_num_shards: int = field(default=1, metadata={"help": "shards the questions are split into (one per GPU or pod); 1 = all, written to the main cache file"})
    merge: bool = field(default=False, metadata={"help": "label nothing: merge the main cache file and every shard file beside it into the main file and report conflicting labels"})
    label_cache: str = field(default="", metadata={"help": "JSONL label cache (shards write beside it); empty = $MEDBRIDGE_CACHE/curate/modality_labels.jsonl"})
    label_fast: bool = field(default=True, metadata={"help": "the fast path: length-sorted batches of label_token_budget tokens, prompts and candidates in one forward (false: the stock two-pass path)"})
    label_token_budget: int = field(default=16384, metadata={"help": "fast path: prompt tokens per labeller forward (rows x longest prompt, image tokens included)"})
    label_workers: int = field(default=-1, metadata={"help": "fast path: threads decoding and preprocessing images ahead of the GPU; -1 = auto (min(4, cores - 1) on GPU, 0 on CPU), 0 = in the labelling thread"})
    label_compile: bool = field(default=False, metadata={"help": "fast path: torch.compile the vision block and the decoder layer (one graph each, dynamic shapes)"})
    label_liger_kernels: bool = field(default=False, metadata={"help": "fast path: Liger's fused RMSNorm / SiLU-mul / rotary kernels in the vision blocks and decoder layers (CUDA GPUs, needs the liger-kernel package)"})
    label_batch_size: int = field(default=8, metadata={"help": "stock path (--label-fast false): questions per labeller forward pass"})
    device: str = field(default="auto", metadata={"help": "labeller device: auto, cpu, cuda, cuda:N"})
    pmc_vqa_csv: str = field(default="", metadata={"help": "CSV file name under pmc_vqa_root; empty = train_2.csv, train.csv or the only CSV"})
    pmc_vqa_image_dir: str = field(default="", metadata={"help": "image folder under pmc_vqa_root; empty = images/, figures/, images_2/ or the root"})
    cache_dir: str = field(default="", metadata={"help": "where s3:// sources are mirrored; empty = $MEDBRIDGE_CACHE/data"})

    def __post_init__(self):
        from components.curate.labeller import check_shard

        check_shard(self.label_shard, self.label_num_shards)
        if self.label_token_budget < 1:
            raise ValueError(f"label_token_budget={self.label_token_budget} must be >= 1 (--label-token-budget)")
        if self.label_workers < -1:
            raise ValueError(f"label_workers={self.label_workers} must be >= 0, or -1 for auto (--label-workers)")
        if self.label_batch_size < 1:
            raise ValueError(f"label_batch_size={self.label_batch_size} must be >= 1 (--label-batch-size)")


def make_parser() -> StepParser:
    return StepParser(PROG, __doc__, LabelConfig, LabelIO)


def cache_path(cfg: LabelConfig) -> Path:
    from components.common.storage import cache_root

    return Path(cfg.label_cache).expanduser() if cfg.label_cache else cache_root() / "curate" / "modality_labels.jsonl"


def run(cfg: LabelConfig, io: LabelIO) -> dict:
    from components.curate.labeller import LabelCache

    path = cache_path(cfg)
    if cfg.merge:
        cache = LabelCache(path)
        if not cache.files:
            raise FileNotFoundError(f"{path}: no label cache and no shard file beside it to merge")
        cache.write_merged()
        summary = {"merged_into": str(path), "files": [p.name for p in cache.files], "entries": len(cache.entries),
                   "duplicates": cache.duplicates, "conflicts": cache.conflicts}
        print(json.dumps(summary, indent=2))
        return summary
    if not io.pmc_vqa_root.strip():
        raise ValueError("pmc_vqa_root is empty: pass --pmc-vqa-root (only --merge needs none)")
    if cfg.label_liger_kernels:  # refused before anything is read or loaded where the kernels cannot run
        from components.curate.labeller import require_labeller_liger

        require_labeller_liger(cfg.device)

    from components.common.storage import cache_root, local_dir
    from components.curate.labeller import ModalityLabeller, label_modalities
    from components.curate.pmcvqa import load_pmc_vqa

    mirror = Path(cfg.cache_dir) if cfg.cache_dir else cache_root() / "data"
    pmc_root = local_dir(io.pmc_vqa_root, mirror, what="pmc_vqa_root")
    loaded = load_pmc_vqa(pmc_root, cfg.pmc_vqa_csv or None, cfg.pmc_vqa_image_dir or None)
    shard = (cfg.label_shard, cfg.label_num_shards) if cfg.label_num_shards > 1 else None
    cache = LabelCache(path, shard=shard)
    labeller = ModalityLabeller(io.labeller_model, device=cfg.device, compile=cfg.label_compile,
                                liger_kernels=cfg.label_liger_kernels)
    stats: dict = {}
    labels = label_modalities(loaded.records, pmc_root, labeller, cache, batch_size=cfg.label_batch_size,
                              fast=cfg.label_fast, token_budget=cfg.label_token_budget, workers=cfg.label_workers,
                              shard=shard, stats=stats)
    summary = {
        "shard": cfg.label_shard, "num_shards": cfg.label_num_shards, "written_to": str(cache.write_path),
        "questions": len(loaded.records), "labelled_now": stats["questions"], "already_cached": stats["cached"],
        "known_labels": len(labels), "batches": stats["batches"], "seconds": round(stats["wall_s"], 1),
        "conflicts": len(cache.conflicts),
    }
    print(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    return launch(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
