"""Modality balancing: an equal-quota subset of labelled questions (the paper's 8,000-question PMC-VQA subset).

    plan = plan_quotas({"CT": 5000, "MRI": 300, ...}, target=8000, include_none=False)
    result = balance_by_modality(records, target=8000, include_none=False, seed=0)
    result.records, result.plan, counts_table_md(result.plan), counts_chart(result.plan, "counts.png")

Quotas: the target is split equally over the eligible modalities (`none` is left out unless include_none);
the remainder of an uneven split goes one question each to the modalities first in MODALITIES order. Modalities
with fewer questions than their share give all they have, and what is left of the target is split equally again
among the others (water-filling), until the target is met or every modality is exhausted. The plan
reports, per modality: available, equal quota, selected, shortfall (equal quota not met).

Which questions fill a quota is a seeded random draw, independent of the input order (records sorted by id first).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from components.common.markdown import md_table
from components.common.records import MODALITIES, MCQRecord


@dataclass
class ModalityPlan:
    available: int
    quota: int  # equal share of the target
    selected: int
    shortfall: int  # quota - selected when positive: questions this modality could not supply


@dataclass
class BalancePlan:
    target: int
    include_none: bool
    modalities: dict[str, ModalityPlan] = field(default_factory=dict)

    @property
    def total_selected(self) -> int:
        return sum(m.selected for m in self.modalities.values())

    @property
    def unfilled(self) -> int:
        return self.target - self.total_selected

    @property
    def redistributed(self) -> int:
        """Questions moved to other modalities to cover the shortfalls."""
        return sum(max(0, m.selected - m.quota) for m in self.modalities.values())

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "include_none": self.include_none,
            "total_selected": self.total_selected,
            "unfilled": self.unfilled,
            "redistributed": self.redistributed,
            "modalities": {k: vars(v) for k, v in self.modalities.items()},
        }


def _equal_split(total: int, names: list[str]) -> dict[str, int]:
    base, extra = divmod(total, len(names)) if names else (0, 0)
    return {m: base + (1 if i < extra else 0) for i, m in enumerate(names)}


def plan_quotas(available: dict[str, int], target: int, include_none: bool = False) -> BalancePlan:
    """Per-modality quotas for `target` questions given the available counts (pure function)."""
    if target < 1:
        raise ValueError(f"target={target} must be >= 1 (rl_size)")
    unknown = set(available) - set(MODALITIES)
    if unknown:
        raise ValueError(f"unknown modality label(s) {sorted(unknown)}; expected {', '.join(MODALITIES)}")
    names = [m for m in MODALITIES if include_none or m != "none"]
    quota = _equal_split(target, names)
    selected = {m: 0 for m in names}
    open_ = [m for m in names if available.get(m, 0) > 0]
    left = target
    while open_:
        share = _equal_split(left, open_)
        short = [m for m in open_ if available[m] < share[m]]
        if not short:
            selected.update(share)
            break
        for m in short:  # these give all they have; the rest share what is left
            selected[m] = available[m]
            left -= available[m]
        open_ = [m for m in open_ if m not in short]
    return BalancePlan(
        target=target,
        include_none=include_none,
        modalities={
            m: ModalityPlan(available.get(m, 0), quota[m], selected[m], max(0, quota[m] - selected[m])) for m in names
        },
    )


@dataclass
class BalanceResult:
    records: list[MCQRecord]
    plan: BalancePlan


def balance_by_modality(records: list[MCQRecord], target: int = 8000, include_none: bool = False, seed: int = 0) -> BalanceResult:
    """Modality-balanced subset of labelled records (their `modality` field), deterministic for a seed."""
    by_mod: dict[str, list[MCQRecord]] = {}
    for r in sorted(records, key=lambda r: r.id):
        by_mod.setdefault(r.modality, []).append(r)
    plan = plan_quotas({m: len(v) for m, v in by_mod.items()}, target, include_none)
    chosen: list[MCQRecord] = []
    for m, p in plan.modalities.items():
        pool = by_mod.get(m, [])
        chosen += random.Random(f"{seed}:{m}").sample(pool, p.selected)
    return BalanceResult(sorted(chosen, key=lambda r: r.id), plan)


def counts_table_md(plan: BalancePlan) -> str:
    lines = [
        f"Target {plan.target} questions, 'none' {'included' if plan.include_none else 'excluded'}; "
        f"selected {plan.total_selected}"
        + (f", {plan.unfilled} short of the target" if plan.unfilled else "")
        + (f"; {plan.redistributed} moved from short modalities to others" if plan.redistributed else ""),
        "",
    ]
    rows = [[m, p.available, p.quota, p.selected, p.shortfall] for m, p in plan.modalities.items()]
    rows.append(["**total**", sum(p.available for p in plan.modalities.values()), plan.target, plan.total_selected,
                 sum(p.shortfall for p in plan.modalities.values())])
    lines.append(md_table(["modality", "available", "equal quota", "selected", "shortfall"], rows))
    return "\n".join(lines) + "\n"


def counts_chart(plan: BalancePlan, path: str | Path, title: str = "PMC-VQA modality balance") -> Path:
    """Bar chart (PNG) of available vs selected questions per modality, with the equal quota marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(plan.modalities)
    avail = [plan.modalities[m].available for m in names]
    sel = [plan.modalities[m].selected for m in names]
    quota = [plan.modalities[m].quota for m in names]
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], avail, width=0.4, label="available (labelled)", color="#9ecae1")
    ax.bar([i + 0.2 for i in x], sel, width=0.4, label="selected", color="#3182bd")
    ax.scatter(list(x), quota, marker="_", s=400, color="black", label="equal quota", zorder=3)
    ax.set_xticks(list(x), names, rotation=20)
    ax.set_ylabel("questions")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def hold_out_by_modality(
    records: list[MCQRecord], per_modality: int, include_none: bool = False, seed: int = 0
) -> list[MCQRecord]:
    """A held-out diagnosis slice of the labelled pool: up to `per_modality` questions of every modality the balanced
    set uses ('none' only with include_none), a seeded draw independent of the input order, sorted by id. The caller
    removes from the pool every question sharing an image or a question text with it (`contamination`)."""
    if per_modality < 1:
        raise ValueError(f"per_modality={per_modality} must be >= 1 (--target-diag-per-modality)")
    by_mod: dict[str, list[MCQRecord]] = {}
    for r in sorted(records, key=lambda r: r.id):
        by_mod.setdefault(r.modality, []).append(r)
    chosen: list[MCQRecord] = []
    for m in MODALITIES:
        if m == "none" and not include_none:
            continue
        pool = by_mod.get(m, [])
        chosen += random.Random(f"{seed}:held-out:{m}").sample(pool, min(per_modality, len(pool)))
    return sorted(chosen, key=lambda r: r.id)
