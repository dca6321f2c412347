"""Human-facing outputs of the diagnosis: Pass@k curves beside a uniform guesser's (PNG) and a Table 2-style
Markdown table with raw and chance-corrected numbers side by side."""

from __future__ import annotations

import re
from pathlib import Path

from components.common.markdown import md_table
from components.common.medmnist_tasks import TASKS


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower() or "group"


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _ks(m: dict) -> list[int]:
    return sorted(int(k) for k in m["pass_at_k"])


def plot_curves(path: str | Path, curves: dict[str, dict], title: str, synthetic: bool) -> Path:
    """One line per entry of `curves` (name -> metrics block M): Pass@k vs k with its 95% band, a uniform guesser's
    Pass@k for the same questions as a dashed line of the same colour, Acc@1 as a marker at k = 1 and a dotted
    level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for i, (name, m) in enumerate(curves.items()):
        color = f"C{i % 10}"
        ks = _ks(m)
        ys = [m["pass_at_k"][str(k)] for k in ks]
        ax.plot(ks, ys, "-o", color=color, ms=3, label=f"{name} (n={m['n']})")
        band = m.get("ci_curve")
        if band:
            ax.fill_between(ks, [band[str(k)][0] for k in ks], [band[str(k)][1] for k in ks], color=color, alpha=0.15)
        chance = (m.get("chance") or {}).get("pass_at_k")
        if chance:
            ax.plot(ks, [chance[str(k)] for k in ks], "--", color=color, lw=1, alpha=0.8)
        ax.plot([1], [m["acc_at_1"]], marker="*", ms=11, color=color, ls="none")
        ax.axhline(m["acc_at_1"], color=color, ls=":", lw=0.8)
    ax.set_xlabel("k (samples)")
    ax.set_ylabel("Pass@k")
    ax.set_ylim(0, 1.02)
    ax.set_title(title + ("  [SYNTHETIC]" if synthetic else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", title="★ / dotted = Acc@1 (greedy); dashed = chance", title_fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def task_name(task: str) -> str:
    return TASKS[task].name if task in TASKS else task


def markdown_table(diag: dict) -> str:
    """Table 2 style: the deciding set's groups, then the breadth set's tasks grouped by modality group; Acc@1,
    Pass@K and a guesser's Pass@K raw, the corrected Pass@K with its interval and the k it was taken at (percent)."""
    k = diag["k"]
    lines = []
    if diag.get("synthetic"):
        lines += ["> **SYNTHETIC**: random-weight model and/or synthetic data; these numbers are a plumbing check, "
                  "not a medical result.", ""]
    dec = diag["decision"]
    lines += [
        f"Support diagnosis ({diag.get('stage', 'initial')}), prompt format `{diag['prompt_format']}`, K = {k}, "
        f"temperature {diag['sampling']['temperature']}, top-p {diag['sampling']['top_p']}; percent; 95% bootstrap "
        f"intervals over questions. Decided on: {(diag.get('decided_on') or {}).get('name', 'the diagnosis set')}.",
        "",
        f"Corrected = (value - chance) / (1 - chance) per question from its own option count, Pass@k taken at the "
        f"largest k whose chance stays <= {diag['chance_correction']['ceiling']}: 0 = a uniform guesser, 100 = always right.",
        "",
    ]

    def row(group: str, task: str, m: dict, branch: str) -> list[str]:
        c = m["corrected"]
        lo, hi = c["ci"]["pass_at_k"]
        used = ", ".join(f"{kk}@{opts}" for opts, kk in c["k_used"].items())
        return [group, task, m["n"], _pct(m["acc_at_1"]), _pct(m["pass_at_k"][str(k)]),
                _pct(m["chance"]["pass_at_k"][str(k)]), _pct(c["acc_at_1"]), _pct(c["pass_at_k"]),
                f"{_pct(lo)} to {_pct(hi)}", used, branch]

    task_group = diag.get("task_groups", {})
    rows = []
    for group, gm in diag["per_modality"].items():
        for task, m in diag["per_task"].items():
            if task_group.get(task) == group:
                weak = " (weak)" if task in dec.get("weak_tasks", []) else ""
                rows.append(row(group, f"{task_name(task)}{weak}", m, ""))
        rows.append(row(f"**{group}**", "all", gm, dec["per_modality"].get(group, {}).get("branch", "")))
    rows.append(row("**overall**", "all", diag["overall"], f"**{dec['branch']}**{' (forced)' if dec['forced'] else ''}"))
    breadth = diag.get("breadth")
    if breadth:
        for group, gm in breadth["per_modality"].items():
            for task, m in diag["per_task"].items():
                if task_group.get(task) == group and (diag.get("task_sets") or {}).get(task) == "breadth":
                    weak = " (weak)" if task in dec.get("weak_tasks", []) else ""
                    rows.append(row(f"breadth: {group}", f"{task_name(task)}{weak}", m, ""))
            rows.append(row(f"breadth: **{group}**", "all", gm, ""))
        rows.append(row("breadth: **overall**", "all", breadth["overall"], ""))
    lines.append(md_table(["Group", "Task", "n", "Acc@1", f"Pass@{k}", f"chance Pass@{k}", "corr. Acc@1",
                           "corr. Pass@K", "corr. Pass@K 95% CI", "k@options", "Branch"], rows))
    lines += ["", f"Decision: {dec['rule']}"]
    if diag.get("gate"):
        lines.append(f"Gate after the bridge: {diag['gate']['rule']}")
    if diag.get("perception_limited"):
        lines.append(f"Perception-limited tasks (probe): {', '.join(task_name(t) for t in diag['perception_limited'])}.")
    for t, note in (diag.get("question_forms") or {}).items():
        lines.append(f"{task_name(t)}: {note}.")
    return "\n".join(lines) + "\n"
