"""The sft and grpo steps on two GPUs through their real launch (`accelerate launch`, one process per GPU, DeepSpeed
ZeRO-3), against a one-GPU baseline, plus a two-process checkpoint that is killed and resumed.

    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 benchmarks/multi_gpu.py --phases baseline,grpo --json-out mg1.json
    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 benchmarks/multi_gpu.py --phases sft,resume --json-out mg2.json
    PYTHONPATH=. python3 benchmarks/multi_gpu.py --tiny       # CPU smoke test: tiny model, two gloo processes

Phases (each prints one `[mgpu] {...}` JSON line; a summary table at the end):
  baseline  GRPO on ONE of the GPUs (CUDA_VISIBLE_DEVICES=0) with the LoRA recipe (full weights with the EMA reference
            do not fit one 141 GB GPU next to their optimizer state): completion tokens/s per GPU
  grpo      GRPO-CARE with full weights on all visible GPUs, ZeRO-3 (the cluster recipe), the support guard measuring
            under ZeRO-3 (gathered weights) before and after: completion tokens/s per GPU
  sft       SFT with full weights on all visible GPUs, ZeRO-3: examples/s and s/step
  resume    GRPO on all visible GPUs saving a checkpoint every step; killed (SIGKILL to the whole process group, as a
            preempted pod) once a checkpoint written by the processes is complete, then run again: the rerun must
            resume from it and finish (`resumed_from` in metrics.json)
Model and data: benchmarks/train_gpu.py's (Qwen2.5-VL-7B shape, random weights, 448 px images); a random model never
emits EOS, so every completion is exactly --max-new-tokens long. The numbers are plumbing and speed figures only.
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

from benchmarks.train_gpu import build_data, build_model, step_argv  # noqa: E402


def _env(args, **extra) -> dict:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "MEDBRIDGE_CACHE": str(Path(args.work) / "cache"), "PYTHONPATH": path, **extra}


def _argv(step, mode, model, data, diagnosis, out, args, **flags) -> list[str]:
    argv = step_argv(step, mode, model, data, diagnosis, out, args)
    for k, v in flags.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return argv


def _figures(step: str, out: Path, n_gpus: int) -> dict:
    log = json.loads((out / "train_log.json").read_text())
    steps = log["steps"]
    metrics = json.loads((out / "metrics.json").read_text())
    secs = [s.get("step_seconds") for s in steps if s.get("step_seconds")]
    r = {"num_processes": metrics.get("num_processes"), "step_seconds": secs,
         "peak_memory_gib": [s.get("peak_memory_gib") for s in steps]}
    timed = secs[1:] or secs  # the first step carries compilation and allocator warm-up
    if step == "grpo":
        from components.common.lineage import read_lineage

        params = read_lineage(out)["params"]
        n_proc = metrics.get("num_processes") or n_gpus
        completions = params["prompts_per_step"] * params["num_generations"] * params["gradient_accumulation_steps"] * n_proc
        per_step = [round(s.get("completions/mean_length", 0) * completions) for s in steps]
        r["completion_tokens_per_step"] = per_step
        if len(secs) > 1:
            per_step = per_step[1:]
        if timed and all(per_step):
            r["completion_tokens_per_s_per_gpu"] = round(sum(per_step) / sum(timed) / n_gpus, 1)
        r["guard"] = log.get("guard", {}).get("reason")
        r["support_watch"] = [{k: h.get(k) for k in ("step", "pass_corrected", "acc_corrected")}
                              for h in log.get("support_watch", [])]
    if timed:
        r["mean_step_s"] = round(sum(timed) / len(timed), 2)
    return r


def run_step(step, mode, model, data, diagnosis, args, name, gpus: str | None, **flags) -> dict:
    out = Path(args.work) / "out" / name
    env = _env(args, **({"CUDA_VISIBLE_DEVICES": gpus} if gpus is not None else {}))
    cmd = [sys.executable, "-m", f"components.{step}", *_argv(step, mode, model, data, diagnosis, out, args, **flags)]
    print(f"\n[mgpu] {name}: {' '.join(cmd)}", flush=True)
    t0 = time.time()
    try:
        rc = subprocess.run(cmd, env=env, timeout=args.timeout).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    result = {"phase": name, "step": step, "mode": mode, "status": rc, "wall_s": round(time.time() - t0, 1)}
    if rc == 0:
        n = len(gpus.split(",")) if gpus else args.n_gpus
        result.update(_figures(step, out, max(1, n)))
    print(f"[mgpu] {json.dumps(result)}", flush=True)
    return result


def run_resume(model, data, diagnosis, args) -> dict:
    from components.common.checkpoints import COMPLETE_FILE, newest_complete
    from components.grpo.__main__ import make_parser
    from components.grpo.train import task_checkpoint_dir

    out = Path(args.work) / "out" / "resume"
    steps = args.resume_steps
    flags = {"max_steps": steps, "watch_every_steps": 1, "keep_checkpoints": "true"}
    if args.tiny:
        flags["num_processes"] = 2
    argv = _argv("grpo", args.resume_mode, model, data, diagnosis, out, args, **flags)
    env = _env(args)
    os.environ["MEDBRIDGE_CACHE"] = env["MEDBRIDGE_CACHE"]  # where the launched task keys its checkpoints
    cfg, io = make_parser().parse(argv)
    root = task_checkpoint_dir(cfg, io, args.n_gpus if not args.tiny else 2)
    import shutil

    shutil.rmtree(root, ignore_errors=True)  # a fresh run: nothing left from an earlier one to resume from
    cmd = [sys.executable, "-m", "components.grpo", *argv]
    print(f"\n[mgpu] resume: {' '.join(cmd)}\n[mgpu] checkpoints under {root}", flush=True)
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    target = root / f"checkpoint-{args.kill_after}" / COMPLETE_FILE
    while not target.is_file():
        if proc.poll() is not None:
            return {"phase": "resume", "status": f"ended ({proc.returncode}) before it could be killed"}
        if time.time() - t0 > args.timeout:
            subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)])
            return {"phase": "resume", "status": "timeout before the checkpoint"}
        time.sleep(0.5)
    # Every process of the launch (the launcher and each training process, whatever process group it made), as when
    # a pod is lost: the session the launch started in.
    subprocess.run(["pkill", "-KILL", "-s", str(proc.pid)])
    proc.wait()
    while subprocess.run(["pgrep", "-s", str(proc.pid)], capture_output=True).stdout.strip():
        time.sleep(0.2)
    killed_at = time.time() - t0
    newest = newest_complete(root)
    print(f"[mgpu] killed after {killed_at:.0f} s; newest complete checkpoint: {newest}", flush=True)
    t1 = time.time()
    rc = subprocess.run(cmd, env=env, timeout=args.timeout).returncode
    result = {"phase": "resume", "status": rc, "killed_after_s": round(killed_at, 1),
              "newest_at_kill": newest.name if newest else None, "rerun_s": round(time.time() - t1, 1)}
    if rc == 0:
        metrics = json.loads((out / "metrics.json").read_text())
        log = json.loads((out / "train_log.json").read_text())
        result.update(resumed_from=Path(metrics.get("resumed_from") or "").name, steps=metrics.get("steps"),
                      logged_steps=[s["step"] for s in log["steps"]], num_processes=metrics.get("num_processes"))
        result["ok"] = bool(newest) and result["resumed_from"] == newest.name and metrics.get("steps") == steps
    print(f"[mgpu] {json.dumps(result)}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny model on CPU, two gloo processes (smoke test)")
    p.add_argument("--work", default="/tmp/medbridge-multi-gpu", help="model, data, outputs and cache")
    p.add_argument("--phases", default="baseline,grpo,sft,resume")
    p.add_argument("--steps", type=int, default=3, help="optimizer steps of the timed runs")
    p.add_argument("--max-new-tokens", type=int, default=256, help="GRPO rollout length")
    p.add_argument("--image-size", type=int, default=448)
    p.add_argument("--resume-steps", type=int, default=3, help="steps of the run that is killed and resumed")
    p.add_argument("--kill-after", type=int, default=1, help="kill once the checkpoint of this step is complete")
    p.add_argument("--resume-mode", default="zero3", help="zero3 | lora")
    p.add_argument("--timeout", type=int, default=900, help="seconds per run")
    p.add_argument("--json-out", default="")
    args = p.parse_args(argv)
    import torch

    args.gpu = torch.cuda.is_available()
    args.n_gpus = torch.cuda.device_count() if args.gpu else 1
    if args.tiny:
        args.image_size, args.max_new_tokens, args.resume_mode = 56, min(args.max_new_tokens, 16), "lora"
    if args.gpu:
        print(f"[mgpu] {args.n_gpus} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = build_model(work, args.tiny, args.image_size)
    data, diagnosis = build_data(work, args.image_size)
    many = {"num_processes": 2} if args.tiny else {}
    results = []
    for phase in [x.strip() for x in args.phases.split(",") if x.strip()]:
        if phase == "baseline":
            results.append(run_step("grpo", "lora", model, data, diagnosis, args, "baseline-1gpu-lora",
                                    None if args.tiny else "0"))
        elif phase == "grpo":
            mode = "lora" if args.tiny else "zero3"
            results.append(run_step("grpo", mode, model, data, diagnosis, args, f"grpo-{args.n_gpus}gpu-{mode}", None,
                                    watch_every_steps=0, **many))
        elif phase == "sft":
            mode = "lora" if args.tiny else "zero3"
            results.append(run_step("sft", mode, model, data, diagnosis, args, f"sft-{args.n_gpus}gpu-{mode}", None,
                                    **many))
        elif phase == "resume":
            results.append(run_resume(model, data, diagnosis, args))
        else:
            raise SystemExit(f"unknown phase {phase!r}; choose from baseline, grpo, sft, resume")
    print("\n| phase | status | processes | s/step | completion tok/s per GPU | peak GiB | wall s |")
    print("|---|---|---:|---:|---:|---|---:|")
    for r in results:
        print(f"| {r['phase']} | {r['status']} | {r.get('num_processes', '')} | {r.get('mean_step_s', '')} | "
              f"{r.get('completion_tokens_per_s_per_gpu', '')} | {r.get('peak_memory_gib', '')} | "
              f"{r.get('wall_s', r.get('rerun_s', ''))} |")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))
    return 0 if all(r["status"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
