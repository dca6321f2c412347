"""Training step time and peak memory of the sft and grpo steps, through their real launchers, on a model of the
Qwen2.5-VL-7B shape with RANDOM weights and the cluster recipes' shapes.

    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 benchmarks/train_gpu.py --steps 3 --max-new-tokens 256 \
        --json-out train_gpu.json 2>&1 | tee train_gpu.log
    PYTHONPATH=. python3 benchmarks/train_gpu.py --tiny --work /tmp/train_bench   # CPU: tiny model, same code path

What runs, for each step in --steps-to-run (default grpo,sft), trying the modes of --modes in order until one
trains (a mode that fails, e.g. out of memory, is reported and the next is tried):
  zero3          the cluster recipe as it is (grpo_qwen25vl7b_care / sft_qwen25vl7b_full): full weights, DeepSpeed
                 ZeRO-3, bf16, gradient checkpointing; `python -m components.<step>` starts one process per visible
                 GPU through `accelerate launch --use_deepspeed` (components.common.launch)
  zero3-offload  the same with the optimizer state in CPU memory (offload_optimizer: true)
  lora           the LoRA recipe (grpo_qwen25vl7b_care_lora / sft_qwen25vl7b_lora): adapters, no DeepSpeed
Only the run length is overridden: --steps optimizer steps, the rollout length (--max-new-tokens; a random model
never emits EOS, so every completion is exactly that long), a small support-watch slice (4 questions, K = 4, 32
tokens, step 0 and the end), no periodic checkpoints. GRPO keeps the recipe's 1 prompt x 8 generations per GPU, CARE
on (EMA reference), lr 5e-7, max_pixels 802,816 (images here are 448 px: 256 image tokens). SFT uses answer-only
targets (--prompt-format direct: no teacher pass) at the recipe's 4 examples x 4 accumulation per GPU.

Model: the real Qwen2.5-VL-7B config (benchmarks/qwen25vl_7b.py) with the tiny test tokenizer's vocabulary (so ~7.2 B
parameters instead of 8.3 B), random bf16 weights, written once to --work. --tiny uses the tiny model instead and
turns DeepSpeed off on a CPU-only machine. Prints, per run: the launch command, mode, status, seconds per optimizer
step (from train_log.json) and peak GPU memory per step; a summary table at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPES = {
    "grpo": {"zero3": "grpo_qwen25vl7b_care", "zero3-offload": "grpo_qwen25vl7b_care", "lora": "grpo_qwen25vl7b_care_lora"},
    "sft": {"zero3": "sft_qwen25vl7b_full", "zero3-offload": "sft_qwen25vl7b_full", "lora": "sft_qwen25vl7b_lora"},
}


def build_model(work: Path, tiny: bool, image_size: int) -> Path:
    """The benchmark model directory (built once; reused when it exists)."""
    from components.common.tiny_model import build_tiny_model

    tiny_dir = work / f"tiny-{image_size}px"
    if not (tiny_dir / "config.json").is_file():
        build_tiny_model(tiny_dir, seed=0, image_size=image_size)
    if tiny:
        return tiny_dir
    out = work / "qwen2.5-vl-7b-shaped-random"
    if (out / "config.json").is_file():
        return out
    import shutil

    import torch
    from transformers import AutoTokenizer

    from benchmarks.qwen25vl_7b import random_qwen25vl_7b

    t0 = time.time()
    model = random_qwen25vl_7b(AutoTokenizer.from_pretrained(tiny_dir), "cuda" if torch.cuda.is_available() else "cpu")
    n = sum(p.numel() for p in model.parameters())
    tmp = work / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    for f in tiny_dir.iterdir():
        if f.name not in ("config.json", "model.safetensors", "generation_config.json", "lineage.json"):
            shutil.copy(f, tmp / f.name)
    from components.common.lineage import write_lineage

    # Marks everything trained from it synthetic, and gives the launchers' task fingerprint a recorded content hash
    # (instead of hashing 15 GB of weights at every launch).
    write_lineage(tmp, step="benchmark-model", artifact="model", params={"config": "Qwen2.5-VL-7B", "seed": 0},
                  synthetic=True, summary="SYNTHETIC Qwen2.5-VL-7B-shaped model with random weights (benchmarks)")
    os.replace(tmp, out)
    del model
    import gc

    gc.collect()
    torch.cuda.empty_cache()  # the launched steps need this process's cached GPU memory back (14 GB otherwise)
    print(f"[bench] built {out}: {n / 1e9:.2f} B parameters, bf16, random weights ({time.time() - t0:.0f} s)", flush=True)
    return out


def build_data(work: Path, image_size: int, n: int = 64) -> tuple[Path, Path]:
    """A synthetic MCQ set (random images of --image-size px, 4 options) and a diagnosis naming its task weak."""
    import numpy as np
    from PIL import Image

    from components.common.records import MCQRecord, save_records

    data = work / f"mcq-{image_size}px"
    if not (data / "records.jsonl").is_file():
        (data / "images").mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        recs = []
        for i in range(n):
            rel = f"images/{i}.png"
            Image.fromarray(rng.integers(0, 255, (image_size, image_size, 3), dtype=np.uint8)).save(data / rel)
            recs.append(MCQRecord(id=f"q{i}", question="Which finding does this image show?",
                                  options=["normal", "pneumonia", "effusion", "mass"], answer="ABCD"[i % 4], image=rel,
                                  task="pmc-vqa", modality="X-ray", split="train", meta={"group": "radiology"}))
        save_records(data, recs)
    diagnosis = work / "diagnosis"
    diagnosis.mkdir(parents=True, exist_ok=True)
    (diagnosis / "diagnosis.json").write_text(json.dumps({
        "k": 4, "tau": 0.5, "synthetic": True,
        "decision": {"branch": "bridge", "rule": "benchmark", "forced": True, "per_modality": {},
                     "weak_tasks": ["pmc-vqa"], "weak_modalities": []},
    }))
    return data, diagnosis


def step_argv(step: str, mode: str, model: Path, data: Path, diagnosis: Path, out: Path, args) -> list[str]:
    recipe = RECIPES[step][mode]
    common = ["--config", recipe, "--model", str(model), "--diagnosis", str(diagnosis), "--out", str(out),
              "--max-steps", str(args.steps), "--seed", "0", "--keep-checkpoints", "false"]
    if mode == "zero3-offload":
        common += ["--offload-optimizer", "true"]
    if args.tiny and not args.gpu:
        common += ["--deepspeed", "false", "--offload-optimizer", "false", "--liger-kernels", "false"]
    if step == "grpo":
        return [*common, "--rl-set", str(data), "--watch-set", str(data), "--max-new-tokens", str(args.max_new_tokens),
                "--watch-size", "4", "--k", "4", "--watch-max-new-tokens", "32", "--watch-every-steps", "0"]
    return [*common, "--sft-set", str(data), "--prompt-format", "direct", "--max-examples", "0",
            "--save-every-steps", "0"]


def run_one(step: str, mode: str, model: Path, data: Path, diagnosis: Path, args) -> dict:
    out = Path(args.work) / "out" / f"{step}-{mode}"
    argv = step_argv(step, mode, model, data, diagnosis, out, args)
    cmd = [sys.executable, "-m", f"components.{step}", *argv]
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "MEDBRIDGE_CACHE": str(Path(args.work) / "cache"), "PYTHONPATH": path}
    print(f"\n[bench] {step} / {mode}: {' '.join(cmd)}", flush=True)
    t0 = time.time()
    try:
        rc = subprocess.run(cmd, env=env, timeout=args.timeout).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    wall = time.time() - t0
    result = {"step": step, "mode": mode, "status": rc, "wall_s": round(wall, 1)}
    log_file = out / "train_log.json"
    if rc == 0 and log_file.is_file():
        log = json.loads(log_file.read_text())["steps"]
        result["step_seconds"] = [h.get("step_seconds") for h in log]
        result["peak_memory_gib"] = [h.get("peak_memory_gib") for h in log]
        metrics = json.loads((out / "metrics.json").read_text())
        result["num_processes"] = metrics.get("num_processes")
        if step == "grpo":
            result["completion_tokens_per_step"] = [h.get("num_tokens") for h in log]
    print(f"[bench] {json.dumps(result)}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="the tiny model (CPU-friendly smoke test of the same path)")
    p.add_argument("--work", default="/tmp/medbridge-train-bench", help="model, data, outputs and cache")
    p.add_argument("--steps-to-run", default="grpo,sft", help="comma-separated: grpo, sft")
    p.add_argument("--modes", default="zero3,zero3-offload,lora", help="tried in order until one trains")
    p.add_argument("--steps", type=int, default=3, help="optimizer steps per run")
    p.add_argument("--max-new-tokens", type=int, default=256, help="GRPO rollout length (the recipe: 2048)")
    p.add_argument("--image-size", type=int, default=448, help="image side in pixels (448 -> 256 image tokens)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per run")
    p.add_argument("--json-out", default="", help="write the results here as JSON")
    args = p.parse_args(argv)
    import torch

    args.gpu = torch.cuda.is_available()
    if args.tiny:
        args.image_size = 56
        args.max_new_tokens = min(args.max_new_tokens, 16)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.gpu:
        print(f"[bench] {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}",
              flush=True)
    model = build_model(work, args.tiny, args.image_size)
    data, diagnosis = build_data(work, args.image_size)
    results = []
    for step in [s.strip() for s in args.steps_to_run.split(",") if s.strip()]:
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            r = run_one(step, mode, model, data, diagnosis, args)
            results.append(r)
            if r["status"] == 0:
                break
    print("\n| step | mode | status | processes | s / step (each) | peak GPU GiB (each) | wall s |")
    print("|---|---|---|---:|---|---|---:|")
    for r in results:
        print(f"| {r['step']} | {r['mode']} | {r['status']} | {r.get('num_processes', '')} | "
              f"{r.get('step_seconds', '')} | {r.get('peak_memory_gib', '')} | {r['wall_s']} |")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    return 0 if all(any(r["status"] == 0 for r in results if r["step"] == s) for s in {r["step"] for r in results}) else 1


if __name__ == "__main__":
    raise SystemExit(main())
