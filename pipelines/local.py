"""Run the whole DAG on this machine through kfp.local (one subprocess per step, same Python environment).

    medbridge run                      # demo profile: tiny random-weight model + synthetic data
    medbridge run --profile cluster --set model_ref=/models/qwen2.5-vl-7b --set backend=transformers ...
"""

from __future__ import annotations

import datetime as _dt
import os
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from pipelines.params import PipelineParams


@dataclass
class LocalRun:
    run_dir: Path
    report_html: Path
    report_md: Path
    branch: str
    seconds: float
    gate: str | None = None  # bridge branch: "proceed" (GRPO ran) or "stop" (the re-diagnosis ended the run)


def _find_run_dir(pipeline_root: Path, before: set[Path]) -> Path:
    new = [p for p in pipeline_root.iterdir() if p.is_dir() and p not in before and p.name.startswith("medbridge-")]
    if not new:
        raise RuntimeError(f"kfp.local wrote no run directory under {pipeline_root}")
    return max(new, key=lambda p: p.stat().st_mtime)


def _branch_of(run_dir: Path) -> str:
    return "bridge" if any(p.name.startswith("sft") for p in run_dir.iterdir()) else "sharpen"


def _gate_of(run_dir: Path) -> str | None:
    import json

    found = sorted(run_dir.glob("rediagnose*/diagnosis/diagnosis.json"))
    return json.loads(found[0].read_text())["gate"]["outcome"] if found else None


def run_local(params: PipelineParams, out_dir: str | Path = "runs", demo: bool = True) -> LocalRun:
    """Run the DAG with kfp.local; build the demo model and data first when `demo` is set."""
    from kfp import local

    from pipelines.demo import build_demo_assets
    from pipelines.pipeline import make_pipeline

    out_dir = Path(out_dir).resolve()
    pipeline_root = out_dir / "kfp"
    pipeline_root.mkdir(parents=True, exist_ok=True)
    if demo:
        print(f"[medbridge] building demo assets (tiny random-weight Qwen2.5-VL, synthetic data) in {out_dir / 'demo-assets'}")
        assets = build_demo_assets(out_dir / "demo-assets", seed=params.seed)
        params = replace(params, labeller_model=assets["model_ref"], **assets)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Each step runs in a subprocess of this interpreter: make sure it finds the same packages.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    before = set(pipeline_root.iterdir())
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=True)
    started = time.time()
    print(f"[medbridge] running the DAG locally ({_dt.datetime.now():%H:%M:%S}); each step logs below")
    make_pipeline()(**params.as_kfp_arguments())
    run_dir = _find_run_dir(pipeline_root, before)
    reports = sorted(run_dir.glob("evaluate*/results/report.html"))
    if not reports:
        raise RuntimeError(f"{run_dir}: the evaluate step wrote no report")
    results = reports[0].parent
    return LocalRun(
        run_dir=run_dir,
        report_html=reports[0],  # a .html file a person can double-click
        report_md=results / "report.md",
        branch=_branch_of(run_dir),
        seconds=time.time() - started,
        gate=_gate_of(run_dir),
    )
