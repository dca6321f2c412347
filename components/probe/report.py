"""Table 1-style probe report: per task, grouped by modality, beside the paper's reference rows.

    probe = build_probe_json(results, pooling="mean", synthetic=False, limit_fraction=0.8, chance_margin=5.0)
    table_md(probe); bar_chart(probe, "probe_accuracy.png")

`probe.json` (read by the diagnosis and evaluation steps):
    {"tasks": {flag: {"name", "group", "modality", "accuracy" (percent), "auc" (percent or null), "medvit_v2",
                      "qwen25vl_7b_probe", "perception_limited": bool, "chance" (percent), "n_train", "n_test"}},
     "pooling": "mean", "synthetic": bool, "rule": "<text of the perception-limited rule>", "groups": {...}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from components.common.markdown import md_table
from components.common.medmnist_tasks import GROUPS, get_task
from components.probe.linear import ProbeResult


AUC_THRESHOLD = 70.0  # percent: the multi-label (ChestMNIST) rule's default


def rule_text(limit_fraction: float, chance_margin: float, auc_threshold: float = AUC_THRESHOLD) -> str:
    return (
        f"perception-limited = probe accuracy < {limit_fraction:g} x the MedViT-V2 reference accuracy, "
        f"or probe accuracy <= chance (training-majority accuracy on the test split) + {chance_margin:g} points; "
        f"for multi-label tasks (ChestMNIST), whose per-finding accuracy a majority guess already puts near 90%, "
        f"mean probe AUC < {auc_threshold:g} (or no AUC measurable): the frozen vision tower does not separate the "
        "classes well enough for SFT or RL on language to fix the task"
    )


def perception_limited(
    accuracy: float,
    medvit_v2: float,
    chance: float,
    limit_fraction: float,
    chance_margin: float,
    *,
    multilabel: bool = False,
    auc: float | None = None,
    auc_threshold: float = AUC_THRESHOLD,
) -> bool:
    """The documented rule (see rule_text); multi-label tasks are judged on their mean AUC (percent)."""
    if multilabel:
        return auc is None or auc < auc_threshold
    return accuracy < limit_fraction * medvit_v2 or accuracy <= chance + chance_margin


def build_probe_json(
    results: dict[str, ProbeResult],
    *,
    pooling: str,
    synthetic: bool,
    limit_fraction: float,
    chance_margin: float,
    auc_threshold: float = AUC_THRESHOLD,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    import medmnist

    tasks: dict[str, Any] = {}
    for flag, r in results.items():
        t = get_task(flag)
        multilabel = medmnist.INFO[flag]["task"].startswith("multi-label")
        tasks[flag] = {
            "name": t.name,
            "group": t.group,
            "modality": t.modality,
            "accuracy": round(r.accuracy, 2),
            "auc": None if r.auc is None else round(r.auc, 2),
            "chance": round(r.chance, 2),
            "medvit_v2": t.medvit_v2,
            "qwen25vl_7b_probe": t.qwen25vl_7b_probe,
            "perception_limited": perception_limited(r.accuracy, t.medvit_v2, r.chance, limit_fraction, chance_margin,
                                                     multilabel=multilabel, auc=r.auc, auc_threshold=auc_threshold),
            "rule_used": f"AUC < {auc_threshold:g}" if multilabel else "accuracy",
            "n_train": r.n_train,
            "n_test": r.n_test,
        }
    groups = {}
    for g in GROUPS:
        flags = [f for f, v in tasks.items() if v["group"] == g]
        if flags:
            groups[g] = {
                "flags": flags,
                "mean_accuracy": round(sum(tasks[f]["accuracy"] for f in flags) / len(flags), 2),
                "perception_limited": [f for f in flags if tasks[f]["perception_limited"]],
            }
    out = {"tasks": tasks, "groups": groups, "pooling": pooling, "synthetic": bool(synthetic),
           "rule": rule_text(limit_fraction, chance_margin, auc_threshold)}
    if extra:
        out.update(extra)
    return out


def summary_metrics(probe: dict[str, Any]) -> dict[str, float]:
    tasks = probe["tasks"]
    accs = [v["accuracy"] for v in tasks.values()]
    return {
        "mean_probe_accuracy": round(sum(accs) / len(accs), 4) if accs else 0.0,
        "n_perception_limited": float(sum(v["perception_limited"] for v in tasks.values())),
        "n_tasks": float(len(tasks)),
    }


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def table_md(probe: dict[str, Any], model_label: str = "this checkpoint") -> str:
    """Markdown in the paper's Table 1 layout (rows = models, columns = tasks, one table per modality group),
    followed by a per-task detail table."""
    tasks = probe["tasks"]
    lines = ["# Vision probe (frozen tower, linear head)", ""]
    if probe.get("synthetic"):
        lines += ["> **SYNTHETIC** — random-weight model and/or synthetic images: a plumbing check, not a medical result.", ""]
    lines += [f"Pooling: {probe['pooling']}. Test accuracy (%) of a linear probe on the frozen vision tower's features; "
              "MedViT-V2 and Qwen2.5-VL-7B rows are the MedBridgeRL paper's Table 1.", "",
              f"Rule: {probe['rule']}.", ""]
    for g in GROUPS:
        flags = [f for f, v in tasks.items() if v["group"] == g]
        if not flags:
            continue
        names = [tasks[f]["name"] for f in flags]
        rows = [
            [f"{model_label} (probe)", *(_fmt(tasks[f]["accuracy"]) for f in flags)],
            ["MedViT-V2 (paper)", *(_fmt(tasks[f]["medvit_v2"]) for f in flags)],
            ["Qwen2.5-VL-7B tower (paper)", *(_fmt(tasks[f]["qwen25vl_7b_probe"]) for f in flags)],
            ["perception-limited", *("**yes**" if tasks[f]["perception_limited"] else "no" for f in flags)],
        ]
        lines += [f"## {g}", "", md_table(["Model", *names], rows), ""]
    rows = [[f"{v['name']} (`{f}`)", v["group"], v["modality"], _fmt(v["accuracy"]), _fmt(v["auc"]), _fmt(v["chance"]),
             _fmt(v["medvit_v2"]), v["n_train"], v["n_test"], "**yes**" if v["perception_limited"] else "no"]
            for f, v in tasks.items()]
    head = ["Task", "Group", "Modality", "Accuracy", "AUC", "Chance", "MedViT-V2", "n train", "n test", "Perception-limited"]
    lines += ["## Per task", "", md_table(head, rows)]
    return "\n".join(lines) + "\n"


def bar_chart(probe: dict[str, Any], path: str | Path) -> Path:
    """Grouped bars per task: this checkpoint's probe vs the two paper references; perception-limited tasks hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    flags = [f for g in GROUPS for f, v in probe["tasks"].items() if v["group"] == g]
    tasks = probe["tasks"]
    xs = range(len(flags))
    w = 0.27
    fig, ax = plt.subplots(figsize=(max(7.0, 1.0 * len(flags) + 2), 4.6))
    bars = ax.bar([x - w for x in xs], [tasks[f]["accuracy"] for f in flags], w, label="this checkpoint (probe)", color="#1f77b4")
    for b, f in zip(bars, flags):
        if tasks[f]["perception_limited"]:
            b.set_hatch("//")
            b.set_edgecolor("#d62728")
    ax.bar(list(xs), [tasks[f]["medvit_v2"] for f in flags], w, label="MedViT-V2 (paper)", color="#7f7f7f")
    ax.bar([x + w for x in xs], [tasks[f]["qwen25vl_7b_probe"] for f in flags], w, label="Qwen2.5-VL-7B tower (paper)", color="#bcbd22")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([f"{tasks[f]['name']}\n({tasks[f]['group']})" for f in flags], fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 105)
    title = f"Linear probe on the frozen vision tower ({probe['pooling']} pooling)\nhatched red = perception-limited"
    if probe.get("synthetic"):
        title = "SYNTHETIC — " + title
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
