"""The training steps' DeepSpeed ZeRO-3 path on CUDA, through the real launcher (run with `make test-gpu`): the tiny
model, the cluster recipes (full weights, ZeRO-3, GRPO-CARE), one process per visible GPU started by
`accelerate launch --use_deepspeed`. Needs the `distributed` extra (deepspeed) and trl."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.gpu
def test_zero3_training_through_the_launcher(tmp_path):
    pytest.importorskip("deepspeed")
    pytest.importorskip("trl")
    import torch

    out = tmp_path / "results.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    r = subprocess.run(
        [sys.executable, "benchmarks/train_gpu.py", "--tiny", "--work", str(tmp_path), "--modes", "zero3",
         "--steps", "2", "--json-out", str(out)],
        cwd=ROOT, env=env, timeout=1800,
    )
    assert r.returncode == 0
    results = {x["step"]: x for x in json.loads(out.read_text())}
    for step in ("grpo", "sft"):
        res = results[step]
        assert res["status"] == 0 and res["num_processes"] == torch.cuda.device_count()
        assert len(res["step_seconds"]) == 2 and all(m and m > 0 for m in res["peak_memory_gib"])
        model = tmp_path / "out" / f"{step}-zero3"
        assert (model / "model.safetensors").is_file() and (model / "lineage.json").is_file()
        metrics = json.loads((model / "metrics.json").read_text())
        # SFT's loss always has a gradient; a random model earns GRPO no reward (zero advantages, no update), so
        # there only the export of the gathered weights is checked.
        assert metrics["params_changed_fraction"] > 0 if step == "sft" else metrics["params_changed_fraction"] == 0.0
    from components.common.modeling import load_model_and_processor

    model, _ = load_model_and_processor(str(tmp_path / "out" / "grpo-zero3"), device="cpu")
    assert sum(p.numel() for p in model.parameters()) > 0  # whole weights, not empty ZeRO-3 placeholders
