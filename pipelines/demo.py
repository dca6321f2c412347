"""The embedded demo profile's inputs: a tiny random-weight Qwen2.5-VL and synthetic data in the real formats.

    medbridge demo-assets --out runs/demo-assets        (or: python -m pipelines.demo --out runs/demo-assets)

It composes steps (curate's synthetic writers and MedMNIST questions, the SFT step's trainer, evaluate's synthetic
benchmarks), so it lives in pipelines/. Everything here is synthetic: the generators mark their outputs synthetic in
lineage, and every artifact built from them inherits the mark (and the report's banner). It exists so that a newcomer can watch the whole DAG run on a laptop; its numbers mean nothing medically.

The demo model starts from random weights and is then warmed up with a short TRL SFT run (step `demo-warmup`
in its lineage) on the synthetic MedMNIST *train* split, so that it writes `<think>…</think><answer>X</answer>`
and answers some questions right: without that, every Pass@K is 0, every GRPO reward is 0 and the demo shows
nothing but zeros. The diagnosis and evaluation use the val and test splits.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from components.common.medmnist_tasks import DEMO_FLAGS

ASSETS_VERSION = "3"  # bump when what build_demo_assets writes changes: older asset folders are rebuilt
WARMUP_STEPS = 150


def warm_up_model(
    raw_model: Path, medmnist_root: Path, pmc_vqa_root: Path, out_dir: Path, seed: int = 0, steps: int = WARMUP_STEPS
) -> Path:
    """Short SFT of the random-weight model on synthetic MedMNIST train and PMC-VQA questions -> model dir `out_dir`."""
    import shutil
    import tempfile

    from components.curate.medmnist_mcq import build_medmnist_mcq
    from components.curate.pmcvqa import load_pmc_vqa
    from components.sft.config import SFTConfig
    from components.sft.data import Selection
    from components.sft.train import fit_sft

    with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp:
        records = []
        for flag in DEMO_FLAGS:
            records += build_medmnist_mcq(medmnist_root, flag, "train", tmp, per_class=6, seed=seed)
        pmc = load_pmc_vqa(pmc_vqa_root).records
        for rec in pmc:
            (Path(tmp) / rec.image).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(pmc_vqa_root) / rec.image, Path(tmp) / rec.image)
        records += pmc
        selection = Selection(records, f"demo warm-up on {len(records)} synthetic train questions", False)
        # A random model learns the answer format from a fixed template sentence (no teacher can help it), and all of
        # it trains, vision tower included; no checkpoints for a two-minute warm-up.
        cfg = SFTConfig(max_steps=steps, learning_rate=3e-3, per_device_batch_size=8, max_examples=0, seed=seed,
                        rationales="template", tune_vision=True, save_every_steps=0)
        fit_sft(cfg, str(raw_model), selection, tmp, out_dir, step="demo-warmup",
                inputs={"random_init": str(raw_model), "medmnist_root": str(medmnist_root), "pmc_vqa_root": str(pmc_vqa_root)})
    return out_dir


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
    write_synthetic_medmnist(paths["medmnist_root"], list(DEMO_FLAGS), seed=seed)
    write_synthetic_pmc_vqa(paths["pmc_vqa_root"], seed=seed)
    raw = build_tiny_model(root / "tiny-qwen2.5-vl-random", seed=seed)
    warm_up_model(raw, paths["medmnist_root"], paths["pmc_vqa_root"], paths["model_ref"], seed=seed)
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
