"""A task subset of a curated MCQ dataset: one task's questions, as a dataset of their own (the RQ3 study trains GRPO
on one MedMNIST task's train split and watches its val split).

    python -m components.curate.subset --data out/sft_set --tasks organamnist --max-records 2000 --seed 0 \
        --out out/rl_organamnist

Flags are the fields of components.curate.config.SubsetConfig and SubsetIO. The output is written atomically with its
images, a lineage record and the records' own validation (components.common.records).
"""

from __future__ import annotations

import shutil

from components.common.cli import StepParser, launch
from components.common.io import atomic_dir
from components.common.lineage import write_lineage
from components.common.records import MCQRecord, balanced_take, load_records, save_records
from components.curate.config import SubsetConfig, SubsetIO

PROG = "python -m components.curate.subset"


def select_tasks(records: list[MCQRecord], tasks: list[str], max_records: int = 0, seed: int = 0) -> list[MCQRecord]:
    """The records of `tasks` (in the data's order), at most `max_records` of them balanced over (task, answer)."""
    chosen = [r for r in records if r.task in set(tasks)]
    if max_records and len(chosen) > max_records:
        keep = {r.id for r in balanced_take(chosen, max_records, lambda r: (r.task, r.answer), seed)}
        chosen = [r for r in chosen if r.id in keep]
    return chosen


def make_parser() -> StepParser:
    return StepParser(PROG, __doc__, SubsetConfig, SubsetIO)


def run(cfg: SubsetConfig, io: SubsetIO) -> list[MCQRecord]:
    tasks = [t.strip() for t in cfg.tasks.split(",") if t.strip()]
    records = load_records(io.data)
    chosen = select_tasks(records, tasks, cfg.max_records, cfg.seed)
    if not chosen:
        have = sorted({r.task for r in records})
        raise ValueError(f"{io.data}: no question of task(s) {', '.join(tasks)}; the dataset holds {', '.join(have)}")
    with atomic_dir(io.out) as tmp:
        for r in chosen:
            if r.image is not None:
                (tmp / r.image).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f"{io.data}/{r.image}", tmp / r.image)
        save_records(tmp, chosen)
        write_lineage(tmp, step="curate", artifact=f"subset:{','.join(tasks)}", inputs={"data": io.data},
                      params={"tasks": tasks, "max_records": cfg.max_records, "seed": cfg.seed},
                      summary=f"{len(chosen)} questions of {', '.join(tasks)} from {len(records)}")
    print(f"[subset] {len(chosen)} questions of {', '.join(tasks)} -> {io.out}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    return launch(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
