"""The whole pipeline on one GPU machine without Kubeflow: every step's launcher in DAG order on a Qwen2.5-VL-7B-shaped
random model, wall time per step; then how long a 1,200-question Pass@16 diagnosis takes at 256 and at 2,048 new
tokens.

    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 benchmarks/pipeline_gpu.py --json-out /tmp/pipeline_gpu.json 2>&1 | tee pipeline_gpu.log
    PYTHONPATH=. python3 benchmarks/pipeline_gpu.py --tiny --device cpu     # the tiny model on CPU: a smoke test (tests)
    ... --phases timing     (only the diagnosis timing)      ... --phases pipeline     (only the DAG)

Phase `pipeline` (kfp is absent on the GPU machine, so the DAG of pipelines/pipeline.py is walked by hand, each step
as `python -m components.<step>` with the flags its component.py passes): curate (the tiny random model as the PMC-VQA
modality labeller) -> probe -> diagnose -> the branch it returns: bridge = sft -> re-diagnose (--force-rl, so the
sharpen step runs too) -> grpo from the SFT model; sharpen = grpo -> evaluate (base, SFT, final). Inputs: the demo
profile's synthetic MedMNIST, PMC-VQA and benchmark files and its harness (K = 8, 64 new tokens); the model under test
is the Qwen2.5-VL-7B config with the tiny tokenizer's vocabulary (~7.2 B parameters, random bf16 weights written once
to --work with a synthetic lineage record); training uses the LoRA recipes (sft_qwen25vl7b_lora,
grpo_qwen25vl7b_care_lora: shared-prefix rollouts) cut to --train-steps steps, answer-only targets (--prompt-format
direct: a random teacher's rationales would mean nothing), a 4-question support watch. Everything it writes is
synthetic. Printed: one line per step (seconds, status), a table, the branch and gate taken.

Phase `timing`: the diagnose step's sampler (`TransformersBackend`: one prefill per question, K = 16 samples + the
greedy row decoded together, CUDA graphs), called as the diagnose step calls it (`sample_and_greedy`: inputs
prepared and texts made on a host thread beside the sampling), on the Qwen2.5-VL-7B config with its full 152,064-token
vocabulary (random weights), temperature 0.7, top-p 0.9, questions with one --image-size px image (448 px -> 256
image tokens); --liger adds Liger's kernels. A random model never ends a completion early, so every row runs the full length:
the worst case. --timing-questions questions are measured per length after a warm-up batch, and the time of 1,200
questions is projected from the measured rate (1,200 x 17 rows x tokens / tokens/s: a projection, stated as such).
Goal at 256 tokens: under 3 minutes (>= 27k sampled tokens/s counting the 16 samples, as the goal does).
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

DIAG_QUESTIONS = 1200
DIAG_K = 16
GOAL_SECONDS_AT_256 = 180.0


# --- phase 1: the DAG ---------------------------------------------------------------------------------------------


def build_assets(work: Path, tiny: bool) -> dict[str, str]:
    """Synthetic inputs in the real formats, the tiny random model (labeller / teacher), the model under test."""
    from benchmarks.train_gpu import build_model
    from components.common.medmnist_tasks import DEMO_FLAGS
    from components.curate.synthetic import write_synthetic_medmnist, write_synthetic_pmc_vqa
    from components.evaluate.synthetic import write_synthetic_benchmarks

    data = work / "data"
    if not (data / "done").is_file():
        write_synthetic_medmnist(data / "medmnist", list(DEMO_FLAGS), seed=0)
        write_synthetic_pmc_vqa(data / "pmc-vqa", seed=0)
        write_synthetic_benchmarks(data / "benchmarks", seed=0)
        (data / "done").write_text("ok")
    t0 = time.perf_counter()
    model = build_model(work, tiny, 56 if tiny else 448)  # tiny: the tiny model itself; else the 7B shape
    labeller = work / ("tiny-56px" if tiny else "tiny-448px")
    return {"model_ref": str(model), "labeller": str(labeller), "medmnist_root": str(data / "medmnist"),
            "pmc_vqa_root": str(data / "pmc-vqa"), "benchmarks_root": str(data / "benchmarks"),
            "model_seconds": round(time.perf_counter() - t0, 1)}


def harness_flags(params, prompt_format: str) -> list[str]:
    """The measurement harness every sampling step gets (pipelines/pipeline.py `harness`: the profile's values, this
    run's prompt format), as the launchers' HarnessConfig flags."""
    from components.common.harness import HarnessConfig
    from components.common.launch import dataclass_argv

    shared = ("k", "max_new_tokens", "temperature", "top_p", "backend", "min_pixels", "max_pixels", "judge_model",
              "judge_mode", "chance_ceiling", "seed")
    return dataclass_argv(HarnessConfig(prompt_format=prompt_format, **{f: getattr(params, f) for f in shared}))


def train_overrides(step: str, tiny: bool, steps: int) -> list[str]:
    """Recipe flags for a short run of the training steps (what `--set *_overrides` would do)."""
    if step == "sft":
        flags = ["--max-steps", str(steps), "--max-examples", "64", "--save-every-steps", "0"]
        return flags if tiny else flags + ["--per-device-batch-size", "4", "--gradient-accumulation-steps", "1"]
    flags = ["--max-steps", str(steps), "--max-new-tokens", "64", "--watch-size", "4", "--k", "4",
             "--watch-max-new-tokens", "32", "--watch-every-steps", "0", "--num-generations", "4",
             "--prompts-per-step", "2", "--max-pixels", "200704"]
    return flags


class Dag:
    """Runs the launchers in order, each in its own process, timing each."""

    def __init__(self, work: Path, device: str, timeout: int):
        self.work, self.timeout, self.steps = work, timeout, []
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        self.env = {**os.environ, "MEDBRIDGE_CACHE": str(work / "cache"), "PYTHONPATH": path,
                    "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        if device == "cpu":
            self.env["CUDA_VISIBLE_DEVICES"] = ""

    def run(self, name: str, module: str, argv: list[str]) -> None:
        cmd = [sys.executable, "-m", module, *argv]
        log = self.work / "logs" / f"{len(self.steps) + 1:02d}-{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"[pipeline] {name}: {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        with open(log, "w") as f:
            try:
                rc = subprocess.run(cmd, env=self.env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                    timeout=self.timeout).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        seconds = time.perf_counter() - t0
        self.steps.append({"step": name, "seconds": round(seconds, 1), "status": rc, "log": str(log)})
        print(f"[pipeline] {name}: status {rc}, {seconds:.1f} s (log {log})", flush=True)
        if rc != 0:
            print(log.read_text()[-3000:], flush=True)
            raise RuntimeError(f"{name} failed with status {rc}; log: {log}")


def run_dag(work: Path, args) -> dict:
    from pipelines.params import load_profile

    params = load_profile("demo")
    assets = build_assets(work, args.tiny)
    print(f"[pipeline] model under test: {assets['model_ref']} (built in {assets['model_seconds']} s); labeller and "
          f"teacher: {assets['labeller']}", flush=True)
    out = work / "run"
    o = {k: out / k for k in ("medmnist_data", "diag_set", "eval_set", "sft_set", "rl_set", "rl_diag_set",
                              "curation_report", "probe_report", "diagnosis", "sft_model", "rediagnosis", "grpo_model",
                              "results")}
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    dag = Dag(work, args.device, args.step_timeout)
    model, fmt = assets["model_ref"], args.prompt_format
    harness = harness_flags(params, fmt)
    dag.run("curate", "components.curate", [
        "--medmnist-root", assets["medmnist_root"], "--pmc-vqa-root", assets["pmc_vqa_root"], "--flags", params.flags,
        "--seed", str(params.seed), "--rl-size", str(params.rl_size), "--include-none", str(params.include_none),
        "--labeller-model", assets["labeller"], "--diag-per-class", str(params.diag_per_class),
        "--eval-per-class", str(params.eval_per_class), "--sft-per-class", str(params.sft_per_class),
        "--target-diag-per-modality", str(params.target_diag_per_modality),
        "--benchmarks-root", assets["benchmarks_root"], "--benchmarks", args.benchmarks or params.benchmarks,
        "--out-medmnist-data", str(o["medmnist_data"]), "--out-diag-set", str(o["diag_set"]),
        "--out-eval-set", str(o["eval_set"]), "--out-sft-set", str(o["sft_set"]), "--out-rl-set", str(o["rl_set"]),
        "--out-rl-diag-set", str(o["rl_diag_set"]), "--out-curation-report", str(o["curation_report"]),
    ])
    dag.run("probe", "components.probe", [
        "--model", model, "--data", str(o["medmnist_data"]), "--flags", params.flags, "--pooling", params.pooling,
        "--epochs", str(params.probe_epochs), "--image-size", str(params.image_size if args.tiny else 224),
        "--batch-size", str(params.batch_size), "--seed", str(params.seed), "--out", str(o["probe_report"]),
    ])
    branch_file = work / "branch.txt"
    dag.run("diagnose", "components.diagnose", [
        "--model", model, "--data", str(o["diag_set"]), "--target-data", str(o["rl_diag_set"]),
        "--probe", str(o["probe_report"]), "--tau", str(params.tau), "--force-branch", params.force_branch,
        *harness, "--out", str(o["diagnosis"]), "--branch-file", str(branch_file),
    ])
    branch = branch_file.read_text().strip()
    print(f"[pipeline] branch: {branch}", flush=True)
    sft_recipe, grpo_recipe = (("sft_demo_tiny", "grpo_demo_tiny") if args.tiny
                               else ("sft_qwen25vl7b_lora", "grpo_qwen25vl7b_care_lora"))
    gate = None
    grpo_extra: list[str] = []
    evaluate_extra: list[str] = []
    if branch == "bridge":
        dag.run("sft", "components.sft", [
            "--config", sft_recipe, "--model", model, "--sft-set", str(o["sft_set"]), "--diagnosis",
            str(o["diagnosis"]), "--out", str(o["sft_model"]), "--teacher-model", assets["labeller"],
            "--prompt-format", fmt, "--seed", str(params.seed), *train_overrides("sft", args.tiny, args.train_steps),
        ])
        gate_file = work / "gate.txt"
        dag.run("rediagnose", "components.diagnose", [
            "--model", str(o["sft_model"]), "--data", str(o["diag_set"]), "--target-data", str(o["rl_diag_set"]),
            "--after-bridge", "true", "--force-rl", "true", "--tau", str(params.tau), *harness,
            "--out", str(o["rediagnosis"]), "--branch-file", str(gate_file),
        ])
        gate = gate_file.read_text().strip()
        print(f"[pipeline] gate after the bridge: {gate} (forced: the sharpen step runs too)", flush=True)
        grpo_extra = ["--init-model", str(o["sft_model"])]
        evaluate_extra = ["--sft-model", str(o["sft_model"]), "--rediagnosis", str(o["rediagnosis"])]
    dag.run("grpo", "components.grpo", [
        "--config", grpo_recipe, "--model", model, "--rl-set", str(o["rl_set"]), "--watch-set", str(o["rl_diag_set"]),
        "--diagnosis", str(o["diagnosis"]), "--out", str(o["grpo_model"]), "--prompt-format", fmt,
        "--seed", str(params.seed), *train_overrides("grpo", args.tiny, args.train_steps), *grpo_extra,
    ])
    dag.run("evaluate", "components.evaluate", [
        "--model", str(o["grpo_model"]), "--base-model", model, "--eval-set", str(o["eval_set"]),
        "--benchmarks-root", assets["benchmarks_root"], "--benchmarks", args.benchmarks or params.benchmarks,
        *harness, "--max-questions", str(args.eval_questions), "--train-task", params.train_task, "--final-stage", "rl", "--out-results", str(o["results"]),
        "--out-report", str(work / "report.html"), "--diagnosis", str(o["diagnosis"]),
        "--probe-report", str(o["probe_report"]), "--curation-report", str(o["curation_report"]), *evaluate_extra,
    ])
    return {"steps": dag.steps, "branch": branch, "gate": gate, "model_build_s": assets["model_seconds"],
            "total_s": round(sum(s["seconds"] for s in dag.steps), 1)}


# --- phase 2: the diagnosis's sampling at two lengths ---------------------------------------------------------------


def timing_prompts(n: int, image_size: int, seed: int = 0):
    """n diagnosis prompts (the harness's think format) with one random image each."""
    import numpy as np
    from PIL import Image

    from components.common.prompts import build_messages
    from components.common.records import MCQRecord
    from components.common.sampling import Prompt

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        rec = MCQRecord(id=f"q{i}", question="Which imaging finding is shown?", options=["A1", "B2", "C3", "D4"],
                        answer="A", image="x.png", task="pmc-vqa", modality="CT")
        out.append(Prompt(build_messages(rec, "think"),
                          Image.fromarray(rng.integers(0, 255, (image_size, image_size, 3), dtype=np.uint8))))
    return out


def time_diagnosis(backend, prompts, new_tokens: int, batch: int, device: str) -> dict:
    """The diagnose step's own sampling call (`sample_and_greedy`: K samples + the greedy row per prompt, batches of
    `batch`, inputs prepared and texts made on a host thread beside the sampling); tokens (each row up to its end) and
    wall time."""
    import torch

    backend.cfg.max_new_tokens, backend.cfg.batch_size = new_tokens, batch
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    samples, greedy_rows = backend.sample_and_greedy(prompts, DIAG_K)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    sampled = sum(c.tokens for row in samples for c in row)
    greedy = sum(c.tokens for c in greedy_rows)
    parts = backend.batch_stats
    return {"questions": len(prompts), "new_tokens": new_tokens, "batch": batch, "seconds": seconds,
            "prefill_s": sum(p["prefill_s"] for p in parts), "decode_s": sum(p["decode_s"] for p in parts),
            "decode_steps": sum(p["steps"] for p in parts),
            "sampled_tokens": sampled, "greedy_tokens": greedy, "sampled_tokens_per_s": sampled / seconds,
            "all_tokens_per_s": (sampled + greedy) / seconds,
            "projected_1200_s": DIAG_QUESTIONS / len(prompts) * seconds}


def run_timing(work: Path, args) -> list[dict]:
    import gc

    import torch

    from benchmarks.grpo import build_model, build_tiny_dir
    from components.common.sampling import SamplingConfig, TransformersBackend

    if args.suffix_tile:
        from components.common import sampling_kernel

        bn, w = (int(x) for x in args.suffix_tile.split("x"))
        sampling_kernel.SUFFIX_BLOCK_N, sampling_kernel.SUFFIX_NUM_WARPS = bn, w
    tiny_dir = build_tiny_dir(work, args.image_size)
    model, processor = build_model(tiny_dir, args.tiny, args.device, full_vocab=True)  # the real LM head
    backend = TransformersBackend("", SamplingConfig(temperature=0.7, top_p=0.9, max_new_tokens=256,
                                                     liger_kernels=args.liger), model, processor)
    out = []
    for new_tokens, n, batch in ((256, args.timing_questions[0], args.timing_batch[0]),
                                 (2048 if not args.tiny else 32, args.timing_questions[1], args.timing_batch[1])):
        if n == 0:  # that length not asked for
            continue
        prompts = timing_prompts(n + batch, args.image_size)
        time_diagnosis(backend, prompts[:batch], min(new_tokens, 64), batch, args.device)  # warm-up (graphs, allocator)
        r = time_diagnosis(backend, prompts[batch:], new_tokens, batch, args.device)
        out.append(r)
        goal = (f"; goal < {GOAL_SECONDS_AT_256 / 60:.0f} min: {'MET' if r['projected_1200_s'] <= GOAL_SECONDS_AT_256 else 'NOT met'}"
                if new_tokens == 256 else "")
        print(f"[diagnosis] {new_tokens} new tokens: {n} questions x ({DIAG_K} samples + greedy) in {r['seconds']:.1f} s = "
              f"{r['sampled_tokens_per_s']:,.0f} sampled tokens/s ({r['all_tokens_per_s']:,.0f} with the greedy rows); "
              f"projected {DIAG_QUESTIONS:,} questions: {r['projected_1200_s'] / 60:.1f} min{goal}; prefill "
              f"{r['prefill_s']:.1f} s, decode {r['decode_s']:.1f} s ({1e3 * r['decode_s'] / max(r['decode_steps'], 1):.1f} "
              f"ms per step), the rest {r['seconds'] - r['prefill_s'] - r['decode_s']:.1f} s", flush=True)
    del backend, model
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phases", default="pipeline,timing", help="comma-separated: pipeline, timing")
    p.add_argument("--train-steps", type=int, default=2, help="optimizer steps of each training step")
    p.add_argument("--prompt-format", default="direct", help="the run's prompt format (think: teacher rationales)")
    p.add_argument("--timing-questions", default="128,32",
                   help="questions measured at 256 and at 2,048 tokens (0: skip that length)")
    p.add_argument("--timing-batch", default="64,16", help="prompts per sampler call at 256 and at 2,048 tokens")
    p.add_argument("--image-size", type=int, default=448, help="timing: image side in pixels")
    p.add_argument("--liger", action="store_true", help="timing: the sampler with liger_kernels (Liger's fused "
                   "RMSNorm / SwiGLU / rotary kernels; needs liger-kernel and CUDA)")
    p.add_argument("--suffix-tile", default="", help="timing: BLOCK_NxNUM_WARPS of the decode's new-token attention "
                   "kernel (sampling_kernel.suffix_attention_merged), e.g. 64x4; '' = its defaults")
    p.add_argument("--benchmarks", default="", help="benchmarks curate keeps out and evaluate scores ('' = the demo "
                   "profile's six)")
    p.add_argument("--eval-questions", type=int, default=24, help="evaluate: questions per benchmark")
    p.add_argument("--step-timeout", type=int, default=900, help="seconds per launcher")
    p.add_argument("--tiny", action="store_true", help="the tiny model everywhere (CPU smoke test)")
    p.add_argument("--device", default="cuda", help="cuda or cpu")
    p.add_argument("--work", default="/tmp/medbridge-pipeline-gpu", help="model, data, outputs, cache, logs")
    p.add_argument("--json-out", default="", help="write the results here as JSON")
    args = p.parse_args(argv)
    phases = {x.strip() for x in args.phases.split(",") if x.strip()}
    if not phases <= {"pipeline", "timing"}:
        raise SystemExit(f"--phases: {args.phases!r}; choose from pipeline, timing")
    args.timing_questions = [int(x) for x in args.timing_questions.split(",")]
    args.timing_batch = [int(x) for x in args.timing_batch.split(",")]
    if args.tiny:
        args.image_size = 56
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result: dict = {}
    if "pipeline" in phases:
        result["pipeline"] = run_dag(work, args)
        print("\n| step | seconds | status |\n|---|---:|---|")
        for s in result["pipeline"]["steps"]:
            print(f"| {s['step']} | {s['seconds']:.1f} | {s['status']} |")
    if "timing" in phases:
        result["diagnosis_timing"] = run_timing(work, args)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    parts = []
    if "pipeline" in result:
        pl = result["pipeline"]
        parts.append(f"DAG {pl['total_s']:.0f} s over {len(pl['steps'])} steps (branch {pl['branch']}, "
                     f"gate {pl['gate']}): " + ", ".join(f"{s['step']} {s['seconds']:.0f}s" for s in pl["steps"]))
    for r in result.get("diagnosis_timing", []):
        parts.append(f"1,200-question Pass@16 at {r['new_tokens']} tokens: {r['projected_1200_s'] / 60:.1f} min "
                     f"projected ({r['sampled_tokens_per_s']:,.0f} sampled tokens/s)")
    print(f"\nSUMMARY pipeline_gpu: {'; '.join(parts)}; wall {result['wall_s']:.0f} s", flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
