"""The embedded demo profile's inputs: a tiny random-weight Qwen2.5-VL and synthetic data in the real formats.

    python -m components.common.demo --out runs/demo-assets

Everything here is synthetic and every artifact built from it is marked synthetic in its lineage and in the
report. It exists so that a newcomer can watch the whole DAG run on a laptop; its numbers mean nothing medically.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from components.common.medmnist_tasks import DEMO_FLAGS

ASSETS_VERSION = "1"


def build_demo_assets(root: str | Path, seed: int = 0) -> dict[str, str]:
    """Build (once) the demo model and data under `root`; return the pipeline parameters that point at them."""
    from components.common.tiny_model import build_tiny_model
    from components.curate.synthetic import write_synthetic_medmnist, write_synthetic_pmc_vqa
    from components.evaluate.synthetic import write_synthetic_benchmarks

    root = Path(root).resolve()
    paths = {
        "model_ref": root / "tiny-qwen2.5-vl",
        "medmnist_root": root / "medmnist",
        "pmc_vqa_root": root / "pmc-vqa",
        "benchmarks_root": root / "benchmarks",
    }
    stamp = root / "assets.json"
    want = {"version": ASSETS_VERSION, "seed": seed, "flags": list(DEMO_FLAGS)}
    if stamp.is_file() and json.loads(stamp.read_text()) == want and all(p.exists() for p in paths.values()):
        return {k: str(v) for k, v in paths.items()}
    root.mkdir(parents=True, exist_ok=True)
    build_tiny_model(paths["model_ref"], seed=seed)
    write_synthetic_medmnist(paths["medmnist_root"], list(DEMO_FLAGS), seed=seed)
    write_synthetic_pmc_vqa(paths["pmc_vqa_root"], seed=seed)
    write_synthetic_benchmarks(paths["benchmarks_root"], seed=seed)
    stamp.write_text(json.dumps(want))
    return {k: str(v) for k, v in paths.items()}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="directory for the demo model and data")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    print(json.dumps(build_demo_assets(args.out, seed=args.seed), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
