"""SFT throughput of the bridge step's own trainer on one GPU: the recipe as it is against its speed knobs (length-grouped
batches, larger micro-batches, no gradient checkpointing, Liger's kernels), same run, same data.

    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 benchmarks/sft.py --json-out /tmp/sft_bench.json 2>&1 | tee sft_bench.log
    PYTHONPATH=. python3 benchmarks/sft.py --tiny --device cpu          # the tiny model on CPU: a smoke test (tests)

Trainer: `components.sft.train.make_sft_trainer` (TRL 1.16's SFTTrainer: prompt-completion rows, only the target
trained, TRL's fused LM-head loss; TRL refuses packing and padding-free batches for vision data), LoRA as in
sft_qwen25vl7b_lora (vision tower frozen), bf16, on the Qwen2.5-VL-7B-shaped RANDOM model of benchmarks/grpo.py
(tiny tokenizer vocabulary, ~7.2 B parameters), built fresh (same seed) for every run. Runs (--runs, comma-separated
VARIANT:MICRO_BATCH), one epoch each over the same --examples rows:
  baseline:4                 the recipe's knobs: 4 examples per micro-batch, random order, gradient checkpointing
  grouped:16                 group_by_length: transformers' length-grouped sampler over each example's token count
                             (components.sft.data.example_lengths), 16 per micro-batch
  grouped-nockpt:4, :8       ... and gradient_checkpointing: false (activations kept; no recomputation); at 16 per
                             micro-batch the 7B shape's activations outgrow a 141 GB H200 (measured)
  grouped-nockpt-liger:8     ... and liger_kernels: true (Liger's RMSNorm / SwiGLU / multimodal-RoPE kernels), when the
                             liger-kernel package imports (else reported as skipped)
Data: think-format examples (a 4-option question, `<think>` rationale of 10-120 words, the answer letter) on random
images whose sides spread over 224-672 px (64-576 image tokens at the 448 px-equivalent cap of 802,816 pixels... the
recipe's max_pixels), so lengths vary as PMC-VQA's do; the length quantiles are printed.

A run that runs out of GPU memory is reported as skipped and the next run goes on.
Printed per run: tokens/s (real tokens, padding excluded, after the first optimizer step), the padding share of the
micro-batches, seconds per example, peak GPU memory, and MFU: model FLOPs of the real tokens (2 x text parameters x
tokens + causal attention; backward of the frozen base = 1 forward under LoRA, 2 with full weights; the frozen vision
tower's forward; recomputation not counted) per second against the bf16 dense peak (989 TFLOP/s) and against an
8192^3 bf16 matmul measured in the same run. Then one SUMMARY line: the best variant against the baseline.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BF16_DENSE_PEAK_TFLOPS = 989.0
VARIANTS = {
    "baseline": {},
    "grouped": {"group_by_length": True},
    "grouped-nockpt": {"group_by_length": True, "gradient_checkpointing": False},
    "grouped-nockpt-liger": {"group_by_length": True, "gradient_checkpointing": False, "liger_kernels": True},
}
WORDS = ("the lesion is hyperintense on the image with a well defined margin suggesting a benign mass adjacent to "
         "the cortex without edema or enhancement consistent with the second option").split()


def parse_run(spec: str) -> dict:
    name, _, batch = spec.partition(":")
    if name not in VARIANTS or not batch.isdigit() or int(batch) < 1:
        raise SystemExit(f"--runs: {spec!r} is not VARIANT:MICRO_BATCH with VARIANT one of {', '.join(VARIANTS)}")
    return {"name": spec, "variant": name, "batch": int(batch), "knobs": VARIANTS[name]}


def build_rows(n: int, sides: tuple[int, int], seed: int = 0) -> list[dict]:
    """Think-format SFT rows (build_sft_rows' format) with images and rationales of spread sizes."""
    import numpy as np
    from PIL import Image

    from components.common.prompts import build_messages
    from components.common.records import MCQRecord
    from components.sft.rationales import sft_target

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        h, w = (int(x) for x in rng.integers(sides[0], sides[1] + 1, size=2))
        rec = MCQRecord(id=f"q{i}", question="Which finding does this image show?",
                        options=["normal", "pneumonia", "effusion", "mass"], answer="ABCD"[i % 4], image="x.png",
                        task="pmc-vqa", modality="X-ray")
        words = [WORDS[j % len(WORDS)] for j in range(int(rng.integers(10, 121)))]
        rows.append({"prompt": build_messages(rec, "think"),
                     "completion": [{"role": "assistant", "content": sft_target(rec, "think", " ".join(words))}],
                     "images": [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))]})
    return rows


class Counter:
    """Per optimizer step: wall time, real and padded tokens, image patches, sequence lengths (CUDA-synchronised)."""

    def __init__(self, trainer, cuda: bool):
        from transformers import TrainerCallback

        self.cuda, self.steps = cuda, []
        self.cur = {"tokens": 0, "padded": 0, "patches": 0, "sq": 0}
        inner = trainer.training_step
        counter = self

        def training_step(model, inputs, *a, **kw):
            mask = inputs["attention_mask"]
            lens = mask.sum(1)
            counter.cur["tokens"] += int(lens.sum())
            counter.cur["padded"] += mask.numel()
            counter.cur["sq"] += int((lens.double() ** 2).sum())
            if inputs.get("pixel_values") is not None:
                counter.cur["patches"] += int(inputs["pixel_values"].shape[0])
            return inner(model, inputs, *a, **kw)

        trainer.training_step = training_step

        class Marks(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                counter.t = counter._now()

            def on_step_end(self, args, state, control, **kw):
                now = counter._now()
                step = dict(counter.cur, wall=now - counter.t)
                if counter.cuda:
                    import torch

                    step["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
                counter.steps.append(step)
                counter.t, counter.cur = now, {"tokens": 0, "padded": 0, "patches": 0, "sq": 0}

        trainer.add_callback(Marks())

    def _now(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()


def run_one(spec: dict, args, tiny_dir: Path, rows: list[dict], hw: dict) -> dict:
    import torch
    from trl import SFTConfig as TRLSFTConfig

    from benchmarks.grpo import build_model, model_numbers
    from components.sft.config import SFTConfig
    from components.sft.train import make_sft_trainer, require_speed_packages, sft_trainer_args

    cuda = args.device.startswith("cuda")
    cfg = SFTConfig(prompt_format="think", per_device_batch_size=spec["batch"], lora=not args.full_weights,
                    learning_rate=0.0, warmup_ratio=0.0, save_every_steps=0, max_length=4096, seed=0,
                    max_pixels=args.max_pixels, **spec["knobs"])
    if cfg.liger_kernels and (not cuda or importlib.util.find_spec("liger_kernel") is None):
        return {"run": spec["name"], "skipped": "liger-kernel is not installed" if cuda else "Liger needs CUDA"}
    require_speed_packages(cfg)
    steps = math.ceil(len(rows) / spec["batch"])
    model, processor = build_model(tiny_dir, args.tiny, args.device)
    if args.max_pixels:
        from components.common.modeling import load_processor

        processor = load_processor(str(tiny_dir), max_pixels=args.max_pixels)
    nums = model_numbers(model)
    targs = sft_trainer_args(cfg, max_steps=steps, on_cuda=cuda, output_dir=str(args.work / "trl"))
    trainer = make_sft_trainer(cfg, model=model, processor=processor, args=TRLSFTConfig(**targs), rows=rows)
    counter = Counter(trainer, cuda)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    timed = counter.steps[1:] or counter.steps
    seconds = sum(s["wall"] for s in timed)
    tokens, padded = sum(s["tokens"] for s in timed), sum(s["padded"] for s in timed)
    n, layers, d = nums["text_params"], nums["layers"], nums["hidden"]
    passes = 2 if cfg.lora else 3  # forward + backward of the frozen base (activations only) or of all weights
    flops = sum(passes * (2 * n * s["tokens"] + 2 * layers * d * s["sq"]) + 2 * nums["vision_params"] * s["patches"]
                for s in timed)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    out = {
        "run": spec["name"], "variant": spec["variant"], "micro_batch": spec["batch"], "knobs": spec["knobs"],
        "steps": len(counter.steps), "timed_steps": len(timed), "tokens_per_s": tokens / seconds,
        "padding_share": 1 - tokens / padded, "seconds_per_example": seconds / max(1, len(timed) * spec["batch"]),
        "model_tflops_per_s": flops / seconds / 1e12, "mfu_vs_peak": flops / seconds / 1e12 / BF16_DENSE_PEAK_TFLOPS,
        "peak_gib": max(s.get("peak_gib", 0.0) for s in counter.steps) if cuda else None,
        "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
    }
    if hw.get("tflops"):
        out["mfu_vs_matmul"] = out["model_tflops_per_s"] / hw["tflops"]
    del trainer, model, counter
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="baseline:4,grouped:16,grouped-nockpt:4,grouped-nockpt:8,grouped-nockpt-liger:8",
                   help="comma-separated VARIANT:MICRO_BATCH (see above)")
    p.add_argument("--examples", type=int, default=192, help="examples per run (one epoch)")
    p.add_argument("--min-side", type=int, default=224, help="smallest image side in pixels")
    p.add_argument("--max-side", type=int, default=672, help="largest image side in pixels")
    p.add_argument("--max-pixels", type=int, default=802816, help="the processor's image area cap (the recipe's)")
    p.add_argument("--full-weights", action="store_true", help="train all weights instead of LoRA adapters")
    p.add_argument("--tiny", action="store_true", help="the tiny model (CPU smoke test of the same code path)")
    p.add_argument("--device", default="cuda", help="cuda or cpu")
    p.add_argument("--work", default="/tmp/medbridge-sft-bench", help="tiny tokenizer/processor dir, TRL output dir")
    p.add_argument("--json-out", default="", help="write the results here as JSON")
    args = p.parse_args(argv)
    import statistics

    import torch

    from benchmarks.grpo import build_tiny_dir, run_or_skip_oom
    from components.sft.data import example_lengths

    runs = [parse_run(s.strip()) for s in args.runs.split(",") if s.strip()]
    if args.tiny:
        args.min_side, args.max_side, args.max_pixels = 56, 168, 112 * 112
    args.work = Path(args.work)
    args.work.mkdir(parents=True, exist_ok=True)
    hw: dict = {}
    if args.device.startswith("cuda"):
        from benchmarks.labeller import matmul_tflops

        hw = {"gpu": torch.cuda.get_device_name(0), "tflops": matmul_tflops(args.device)}
        print(f"[sft] {hw['gpu']}, torch {torch.__version__}: bf16 8192^3 matmul {hw['tflops']:.0f} TFLOP/s",
              flush=True)
    tiny_dir = build_tiny_dir(args.work, 448 if not args.tiny else 56)
    rows = build_rows(args.examples, (args.min_side, args.max_side))
    from components.common.modeling import load_processor

    lengths = sorted(example_lengths(rows, load_processor(str(tiny_dir), max_pixels=args.max_pixels)))
    q = statistics.quantiles(lengths, n=10)
    print(f"[sft] {len(rows)} examples, tokens per example: min {lengths[0]}, p10 {q[0]:.0f}, median "
          f"{statistics.median(lengths):.0f}, p90 {q[-1]:.0f}, max {lengths[-1]}", flush=True)
    results = []
    for spec in runs:
        t0 = time.perf_counter()
        r = run_or_skip_oom(run_one, spec, args, tiny_dir, rows, hw)
        r["run_wall_s"] = time.perf_counter() - t0
        results.append(r)
        if "skipped" in r:
            print(f"[sft] {r['run']}: skipped ({r['skipped']})", flush=True)
            continue
        mm = f", {r['mfu_vs_matmul']:.1%} of the measured matmul" if "mfu_vs_matmul" in r else ""
        peak = f", peak {r['peak_gib']:.1f} GiB" if r["peak_gib"] else ""
        print(f"[sft] {r['run']}: {r['tokens_per_s']:,.0f} tokens/s, padding {r['padding_share']:.0%}, "
              f"{r['seconds_per_example'] * 1e3:.0f} ms/example, MFU {r['mfu_vs_peak']:.1%} of 989 TFLOP/s{mm}{peak}",
              flush=True)
    done = [r for r in results if "skipped" not in r]
    base = next((r for r in done if r["variant"] == "baseline"), None)
    print("\n| run | micro-batch | tokens/s | x baseline | padding | ms/example | MFU (989) | peak GiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in done:
        x = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}" if base else ""
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] else ""
        print(f"| {r['run']} | {r['micro_batch']} | {r['tokens_per_s']:,.0f} | {x} | {r['padding_share']:.0%} | "
              f"{r['seconds_per_example'] * 1e3:.0f} | {r['mfu_vs_peak']:.1%} | {peak} |")
    summary: dict = {}
    if base and done:
        best = max(done, key=lambda r: r["tokens_per_s"])
        summary = {"baseline_tokens_per_s": base["tokens_per_s"], "best_run": best["run"],
                   "best_tokens_per_s": best["tokens_per_s"], "speedup": best["tokens_per_s"] / base["tokens_per_s"],
                   "baseline_mfu": base["mfu_vs_peak"], "best_mfu": best["mfu_vs_peak"]}
        print(f"\nSUMMARY sft: {best['run']} {best['tokens_per_s']:,.0f} tokens/s (MFU {best['mfu_vs_peak']:.1%}) vs "
              f"baseline {base['tokens_per_s']:,.0f} (MFU {base['mfu_vs_peak']:.1%}) = {summary['speedup']:.2f}x, "
              "same run, same data", flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"hardware": hw, "lengths": lengths, "results": results,
                                                   "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
