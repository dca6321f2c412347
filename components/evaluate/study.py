"""The RQ3 study's report (MedBridgeRL, section 3.3): GRPO on one task per modality group, each from the base model
and from a bridged model, evaluated in-domain, within-modality and cross-modality; Acc@1 and Pass@K before and after
RL with paired intervals, as a transfer heatmap and the paper's pairs as a table.

    python -m components.evaluate.study --from-base runs/a/results runs/b/results ... \
        --from-bridged runs/c/results ... --tasks organamnist,pathmnist,octmnist --out out/study \
        --out-report out/study.html

Flags are the fields of components.evaluate.config.StudyConfig and StudyIO. Each results directory is one evaluate
run (results.json): `train_task` is the task GRPO trained on; "before RL" is the bridged (SFT) model when the run
scored one, else the model it started from. The cells (`study_cells`) are a pure function of those results.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from components.common.cli import StepParser, launch
from components.common.io import atomic_dir, atomic_write_text, write_json
from components.common.lineage import write_lineage
from components.common.medmnist_tasks import TASKS
from components.evaluate.config import StudyConfig, StudyIO
from components.evaluate.transfer import regime_for

PROG = "python -m components.evaluate.study"
INITS = ("base", "bridged")
# The paper's transfer pairs (RQ3): training task -> the evaluation tasks it reports, with the regime it names.
PAPER_PAIRS = {
    ("organamnist", "organamnist"): "in-domain",
    ("pathmnist", "pathmnist"): "in-domain",
    ("octmnist", "octmnist"): "in-domain",
    ("organamnist", "organcmnist"): "within-modality",
    ("organamnist", "organsmnist"): "within-modality",
    ("organamnist", "pneumoniamnist"): "within-modality (larger shift)",
    ("octmnist", "pathmnist"): "cross-modality",
    ("organamnist", "pathmnist"): "cross-modality",
    ("organamnist", "octmnist"): "cross-modality",
}


def _passk(m: dict) -> float | None:
    curve = m.get("pass_at_k") or {}
    return curve[max(curve, key=int)] if curve else None


def study_cells(runs: list[tuple[str, dict]]) -> list[dict]:
    """One cell per (run, evaluated task): before/after Acc@1 and Pass@K with intervals, the paired change, the
    regime as the paper names it (relative to the GRPO task alone), and whether the bridge's SFT data held the task."""
    cells = []
    for init, res in runs:
        if init not in INITS:
            raise ValueError(f"run kind {init!r} is not one of {', '.join(INITS)}")
        rl_task = res["train_task"]
        stages = res.get("stages") or ["base", "trained"]
        before = "sft" if "sft" in stages else "base"
        sft_tasks = set(res.get("sft_tasks") or [])
        for task, e in (res.get("transfer") or {}).get("tasks", {}).items():
            d = (e.get("deltas") or {}).get("sft_to_rl") if before == "sft" else e.get("delta")
            regime = regime_for(task, rl_task, e.get("group"))
            b, a = e.get(before) or {}, e.get("trained") or {}
            cells.append({
                "init": init,
                "rl_task": rl_task,
                "task": task,
                "regime": PAPER_PAIRS.get((rl_task, task), regime.name),
                "shift": regime.shift,
                "paper_pair": (rl_task, task) in PAPER_PAIRS,
                "sft_trained_on_task": task in sft_tasks,
                "n": b.get("n"),
                "before": before,
                "acc_before": b.get("acc_at_1"), "acc_after": a.get("acc_at_1"),
                "acc_before_ci": (b.get("ci") or {}).get("acc_at_1"), "acc_after_ci": (a.get("ci") or {}).get("acc_at_1"),
                "pass_before": _passk(b), "pass_after": _passk(a),
                "pass_before_ci": (b.get("ci") or {}).get("pass_at_k"), "pass_after_ci": (a.get("ci") or {}).get("pass_at_k"),
                "acc_delta": (d or {}).get("acc_at_1"), "pass_delta": (d or {}).get("pass_at_k"),
            })
    order = {t: i for i, t in enumerate(TASKS)}
    rl_order = {t: i for i, t in enumerate(dict.fromkeys(r["train_task"] for _, r in runs))}
    regimes = ("in-domain", "within-modality", "within-modality (larger shift)", "cross-modality", "cross-dataset")

    def key(c: dict):
        regime = regimes.index(c["regime"]) if c["regime"] in regimes else len(regimes)
        return rl_order[c["rl_task"]], INITS.index(c["init"]), not c["paper_pair"], regime, order.get(c["task"], 99)

    return sorted(cells, key=key)


def heatmap(cells: list[dict], path: Path, synthetic: bool, k: Any) -> Path:
    """Two panels (Δ Acc@1, Δ Pass@K after - before RL, points): rows = GRPO task x start, columns = evaluated task;
    the paper's pairs framed, '*' where the bridge's SFT data held the evaluated task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Rectangle

    rows = list(dict.fromkeys((c["rl_task"], c["init"]) for c in cells))
    cols = list(dict.fromkeys(c["task"] for c in sorted(cells, key=lambda c: list(TASKS).index(c["task"]) if c["task"] in TASKS else 99)))
    fig, axes = plt.subplots(2, 1, figsize=(3 + 1.2 * len(cols), 2.4 + 1.0 * len(rows)), dpi=110)
    for ax, metric, label in ((axes[0], "acc_delta", "Δ Acc@1"), (axes[1], "pass_delta", f"Δ Pass@{k}")):
        grid = np.full((len(rows), len(cols)), np.nan)
        for c in cells:
            v = (c[metric] or {}).get("value")
            if v is not None:
                grid[rows.index((c["rl_task"], c["init"])), cols.index(c["task"])] = 100 * v
        lim = max(5.0, float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 5.0)
        ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
        for c in cells:
            i, j = rows.index((c["rl_task"], c["init"])), cols.index(c["task"])
            v = grid[i, j]
            text = "n/a" if np.isnan(v) else f"{v:+.1f}" + ("*" if c["sft_trained_on_task"] else "")
            dark = not np.isnan(v) and abs(v) > 0.6 * lim
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
            if c["paper_pair"]:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=1.6, ec="black"))
        ax.set_xticks(range(len(cols)), [TASKS[t].name if t in TASKS else t for t in cols], fontsize=9)
        ax.set_yticks(range(len(rows)), [f"{TASKS[t].name if t in TASKS else t} · {i}" for t, i in rows], fontsize=9)
        ax.set_title(f"{label} after − before RL (points)" + ("  [SYNTHETIC]" if synthetic else ""), fontsize=10)
    fig.suptitle("GRPO on one task (rows: task · start) → evaluated task (columns)\nframed: the paper's pairs; "
                 "*: the bridge's SFT data held the task", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def make_parser() -> StepParser:
    return StepParser(PROG, __doc__, StudyConfig, StudyIO)


def _read(d: str) -> dict:
    path = Path(d) / "results.json"
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    for key in ("train_task", "transfer"):
        if key not in data:
            raise ValueError(f"{path}: missing field {key!r}; pass the evaluate step's results directories")
    return data


def run(cfg: StudyConfig, io: StudyIO) -> dict:
    from components.evaluate.report import collect_steps, synthetic_reasons
    from components.evaluate.study_report import render_study

    runs = [("base", _read(d)) for d in io.from_base] + [("bridged", _read(d)) for d in io.from_bridged]
    cells = study_cells(runs)
    inputs = {f"{init}-{i}": d for init, dirs in (("base", io.from_base), ("bridged", io.from_bridged))
              for i, d in enumerate(dirs)}
    reasons = synthetic_reasons(collect_steps(inputs))
    tasks = [t for t in cfg.tasks.split(",") if t] or list(dict.fromkeys(r["train_task"] for _, r in runs))
    sft_tasks = sorted({t for _, r in runs for t in r.get("sft_tasks") or []})
    targets = sorted({c["task"] for c in cells if c["sft_trained_on_task"] and c["task"] != c["rl_task"]})
    k = runs[0][1].get("k", "K") if runs else "K"
    study = {
        "tasks": tasks,
        "k": k,
        "bridged_model": cfg.bridged_model or "the bridge step's SFT model",
        "sft_tasks": sft_tasks,
        "sft_data_includes_transfer_targets": targets,
        "runs": [{"init": init, "train_task": r["train_task"], "models": r.get("models"), "stages": r.get("stages")}
                 for init, r in runs],
        "cells": cells,
        "synthetic": bool(reasons),
        "synthetic_reasons": reasons,
    }
    with atomic_dir(io.out) as tmp:
        write_json(tmp / "study.json", study)
        heatmap(cells, tmp / "transfer_heatmap.png", bool(reasons), k)
        html, md = render_study(study, tmp / "transfer_heatmap.png")
        atomic_write_text(tmp / "report.md", md)
        atomic_write_text(tmp / "report.html", html)
        write_lineage(tmp, step="study", artifact="study", inputs=inputs,
                      params={"tasks": tasks, "bridged_model": cfg.bridged_model},
                      summary=f"RQ3 study: {len(runs)} GRPO runs ({', '.join(tasks)}; base and bridged), "
                      f"{len(cells)} transfer cells")
    atomic_write_text(io.out_report, html)
    print(f"[study] {len(runs)} runs, {len(cells)} cells -> {io.out_report}", flush=True)
    return study


def main(argv: list[str] | None = None) -> int:
    return launch(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
