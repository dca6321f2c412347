"""What TRL's GRPO dataloader costs per optimizer step, with the rows' images inside the Arrow table (a plain
`Dataset.from_list` of PIL images) and kept out of it (`components.grpo.train.rows_dataset`). CPU only.

    PYTHONPATH=. python3 benchmarks/grpo_dataloader.py --prompts 2 --generations 8 --accumulation 16 --image-size 448

TRL's RepeatSampler hands every accumulation micro-step the whole generation batch (prompts x generations x
accumulation rows), so an optimizer step fetches accumulation x that many rows; this times exactly that many
`dataset.__getitems__` calls of the generation batch's indices, as TRL's DataLoader makes them (identity collator).
Images are random RGB pixels (PNG-incompressible, as in benchmarks/grpo.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def time_fetches(dataset, indices: list[int], fetches: int) -> float:
    t0 = time.perf_counter()
    for _ in range(fetches):
        batch = dataset.__getitems__(indices)
        assert all(row["image"].size for row in batch)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=2, help="prompts per micro-batch")
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--accumulation", type=int, default=16, help="micro-batches per optimizer step")
    p.add_argument("--image-size", type=int, default=448)
    args = p.parse_args(argv)
    from datasets import Dataset

    from benchmarks.grpo import build_rows
    from components.grpo.train import rows_dataset

    n_prompts = args.prompts * args.accumulation
    rows = build_rows(n_prompts, args.image_size)
    indices = [i for i in range(n_prompts) for _ in range(args.generations)]  # a prompt's G copies side by side
    t0 = time.perf_counter()
    arrow = Dataset.from_list(rows)
    build_arrow = time.perf_counter() - t0
    t0 = time.perf_counter()
    kept = rows_dataset(rows, cache_images=2 * n_prompts)
    build_kept = time.perf_counter() - t0
    print(f"[dataloader] generation batch {len(indices)} rows ({n_prompts} prompts x {args.generations}), "
          f"{args.accumulation} fetches per optimizer step, {args.image_size} px images")
    print("| dataset | build s | s per optimizer step (fetches) |")
    print("|---|---:|---:|")
    for name, ds, build in (("images in the Arrow table (Dataset.from_list)", arrow, build_arrow),
                            ("images kept out (rows_dataset)", kept, build_kept)):
        print(f"| {name} | {build:.2f} | {time_fetches(ds, indices, args.accumulation):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
