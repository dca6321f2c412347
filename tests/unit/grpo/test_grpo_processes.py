"""The sharpen and bridge launchers as real processes: a run killed mid-way (SIGKILL) resumes from its newest complete
checkpoint, skips a torn one, and its loss curve matches an uninterrupted run; two training processes on CPU (DDP over
gloo, started by the launcher itself) train, checkpoint and write one model."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _env(tmp_path):
    return {**os.environ, "MEDBRIDGE_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT),
            "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _grpo_flags(model, mcq_dir, diagnosis, out, **extra):
    flags = {
        "--model": model, "--rl-set": mcq_dir, "--watch-set": mcq_dir, "--diagnosis": diagnosis, "--out": out,
        "--prompt-format": "direct", "--max-steps": 8, "--learning-rate": 1e-4, "--num-generations": 4,
        "--max-new-tokens": 6, "--temperature": 0.7, "--top-p": 0.9, "--k": 2, "--watch-size": 4,
        "--watch-max-new-tokens": 6, "--watch-every-steps": 2, "--ema-every": 1, "--seed": 0, **extra,
    }
    return [str(a) for kv in flags.items() for a in kv]


def _run(module, argv, env, timeout=600):
    return subprocess.run([sys.executable, "-m", module, *argv], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_killed_run_resumes_and_matches_an_uninterrupted_one(warm_model_dir, mcq_dir, bridge_diagnosis, tmp_path):
    from components.common.checkpoints import COMPLETE_FILE, newest_complete
    from components.grpo.__main__ import make_parser
    from components.grpo.train import task_checkpoint_dir

    env = _env(tmp_path)
    # The uninterrupted run (its own checkpoint directory).
    ref = _run("components.grpo", _grpo_flags(warm_model_dir, mcq_dir, bridge_diagnosis, tmp_path / "ref",
                                              **{"--checkpoint-dir": tmp_path / "ref-checkpoints"}), env)
    assert ref.returncode == 0, ref.stderr[-3000:]

    # The same task, killed without warning once a checkpoint half-way through is complete.
    argv = _grpo_flags(warm_model_dir, mcq_dir, bridge_diagnosis, tmp_path / "out")
    cfg, io = make_parser().parse(argv)
    root = task_checkpoint_dir(cfg, io, 1)  # where the launcher keys this task's checkpoints
    proc = subprocess.Popen([sys.executable, "-m", "components.grpo", *argv], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not (root / "checkpoint-4" / COMPLETE_FILE).is_file():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    newest = newest_complete(root)
    assert newest is not None and newest.name in ("checkpoint-4", "checkpoint-6")
    assert not (tmp_path / "out").exists()  # nothing half-written where the model goes

    # A save the kill cut short, newer than the newest complete checkpoint: it must be skipped, never loaded.
    torn = root / f"checkpoint-{int(newest.name.split('-')[1]) + 1}"
    shutil.copytree(newest, torn)
    (torn / "model.safetensors").write_bytes((torn / "model.safetensors").read_bytes()[:1000])

    rerun = _run("components.grpo", argv, env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"removing incomplete checkpoint {torn}" in rerun.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    # Resumed from the newest complete checkpoint at the time of the kill: at most one save interval (2 steps) lost.
    assert metrics["resumed_from"] == str(newest) and metrics["steps"] == 8
    assert not root.exists()  # checkpoints deleted once the model is written

    got = json.loads((tmp_path / "out" / "train_log.json").read_text())
    want = json.loads((tmp_path / "ref" / "train_log.json").read_text())
    assert [s["step"] for s in got["steps"]] == [s["step"] for s in want["steps"]] == list(range(1, 9))
    for g, w in zip(got["steps"], want["steps"]):
        assert math.isclose(g["loss"], w["loss"], rel_tol=1e-3, abs_tol=1e-5), (g["step"], g["loss"], w["loss"])
        assert math.isclose(g["reward"], w["reward"], abs_tol=1e-6)
        # the gradient norm depends on the weights themselves (GRPO's loss value at ratio 1 does not)
        assert math.isclose(g["grad_norm"], w["grad_norm"], rel_tol=1e-3, abs_tol=1e-6), (g["step"], "grad_norm")
    assert [h["pass_corrected"] for h in got["support_watch"]] == [h["pass_corrected"] for h in want["support_watch"]]
    assert any(s["loss"] != 0 for s in want["steps"])  # the curves carry a signal (not all-zero advantages)


def test_two_training_processes_on_cpu(warm_model_dir, tiny_model_dir, mcq_dir, bridge_diagnosis, tmp_path):
    """`--num-processes 2` on a CPU-only machine: the launcher starts two processes (torchrun, DDP over gloo); rewards,
    the GRPO-CARE confidences and the watch are gathered over both, rank 0 writes the model and its lineage once."""
    from components.common.checkpoints import check_complete
    from components.common.lineage import read_lineage

    env = _env(tmp_path)
    ckpts = tmp_path / "grpo-checkpoints"
    r = _run("components.grpo", _grpo_flags(
        warm_model_dir, mcq_dir, bridge_diagnosis, tmp_path / "grpo",
        **{"--max-steps": 3, "--num-processes": 2, "--keep-checkpoints": "true", "--checkpoint-dir": ckpts}), env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "torch.distributed.run --nnodes 1 --nproc_per_node 2" in r.stderr
    metrics = json.loads((tmp_path / "grpo" / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["steps"] == 3
    log = json.loads((tmp_path / "grpo" / "train_log.json").read_text())
    assert [h["step"] for h in log["support_watch"]] == [0, 2, 3]
    assert all(h["n_questions"] == 4 for h in log["support_watch"])  # both ranks' halves gathered
    ckpt = ckpts / "checkpoint-2"
    assert check_complete(ckpt) is None and (ckpt / "rng_state_0.pth").is_file() and (ckpt / "rng_state_1.pth").is_file()
    assert read_lineage(tmp_path / "grpo")["step"] == "grpo"

    # The bridge the same way, think format: the two processes share the teacher's work, then train.
    cache = tmp_path / "rationales"
    r = _run("components.sft", [
        "--model", str(tiny_model_dir), "--sft-set", str(mcq_dir), "--diagnosis", str(bridge_diagnosis),
        "--out", str(tmp_path / "sft"), "--teacher-model", str(tiny_model_dir), "--rationale-cache", str(cache),
        "--prompt-format", "think", "--max-steps", "2", "--per-device-batch-size", "2", "--max-examples", "8",
        "--teacher-max-new-tokens", "12", "--learning-rate", "1e-3", "--num-processes", "2",
    ], env)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((tmp_path / "sft" / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["steps"] == 2
    assert metrics["targets"]["generated"] == 8 - metrics["targets"]["cached"] > 0
    assert len(list(cache.glob("*.jsonl"))) == 2  # each process wrote its share
