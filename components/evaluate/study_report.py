"""The RQ3 study's report: one context (ready rows, the heatmap as a data: URI) rendered by study.html.jinja and
study.md.jinja, with the run report's formatting helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from components.common.medmnist_tasks import TASKS
from components.evaluate.report import BANNER, _environment, _images, _table, _with_ci, ci, pct, signed


def _name(t: str) -> str:
    return TASKS[t].name if t in TASKS else t


def _row(c: dict) -> list[str]:
    d_acc, d_pass = c.get("acc_delta") or {}, c.get("pass_delta") or {}
    return [
        _name(c["rl_task"]),
        c["init"],
        _name(c["task"]),
        c["regime"],
        f"{pct(c['acc_before'])} → {pct(c['acc_after'])}",
        _with_ci(signed(d_acc.get("value")), ci(d_acc.get("ci"))),
        f"{pct(c['pass_before'])} → {pct(c['pass_after'])}",
        _with_ci(signed(d_pass.get("value")), ci(d_pass.get("ci"))),
        "yes" if c["sft_trained_on_task"] else "",
    ]


def study_context(study: dict, heatmap_png: Path) -> dict[str, Any]:
    k = study.get("k", "K")
    head = ["GRPO on", "start", "evaluated on", "regime", "Acc@1 before → after", "Δ Acc@1 [95% CI]",
            f"Pass@{k} before → after", f"Δ Pass@{k} [95% CI]", "bridge's SFT data held it"]
    cells = study.get("cells") or []
    targets = study.get("sft_data_includes_transfer_targets") or []
    return {
        "title": "MedBridge RQ3 study: when does RL help, and does it transfer?",
        "banner": {"show": bool(study.get("synthetic")), "text": BANNER,
                   "reasons": "; ".join(study.get("synthetic_reasons") or [])},
        "intro": (
            f"GRPO on {', '.join(_name(t) for t in study.get('tasks') or [])} (train split), each from the base model "
            f"and from a bridged model ({study.get('bridged_model')}); evaluated in-domain, within-modality and "
            f"cross-modality. Before RL = the model the run started from (the bridged model for bridged runs); paired "
            f"bootstrap 95% intervals over the same questions; percent."
        ),
        "targets_note": (
            f"The bridge's SFT data includes transfer target task(s): {', '.join(_name(t) for t in targets)}. Their "
            "cells (marked *) measure RL on a model already trained on that task, not transfer alone."
            if targets else ""
        ),
        "pairs": _table(head, [_row(c) for c in cells if c["paper_pair"]]),
        "all": _table(head, [_row(c) for c in cells]),
        "heatmap": _images([heatmap_png]),
        "note": (
            "Regimes as the paper names them, relative to the GRPO task: in-domain (same task), within-modality "
            "(OrganA → OrganC / OrganS; OrganA → Pneumonia a larger shift), cross-modality (OCT → Path, OrganA → "
            "Path, OrganA → OCT). The paper (Fig. 2): RL mainly sharpens, its in-domain gain bounded by the starting "
            "Pass@16; under cross-modality shifts it changes Acc@1 little and can lower Pass@16, more so from the base."
        ),
    }


def render_study(study: dict, heatmap_png: Path) -> tuple[str, str]:
    ctx = study_context(study, heatmap_png)
    html = _environment(autoescape=True).get_template("study.html.jinja").render(**ctx)
    md = _environment(autoescape=False).get_template("study.md.jinja").render(**ctx)
    return html, md
