"""Transfer regimes relative to the trained task, and the "wins its benchmark, loses transfer" flag.

    regime_for("organcmnist", "organamnist")   -> Regime("within-modality", "same modality (CT)")
    regime_for("pneumoniamnist", "organamnist") -> Regime("within-modality", "larger shift: CT -> X-ray")
    regime_for("pathmnist", "organamnist")     -> Regime("cross-modality", "radiology -> microscopy")
    regime_for("pathmnist", "pmc-vqa")         -> Regime("cross-dataset", "trained on pmc-vqa, scored on MedMNIST")

The flag is the ChexReason failure mode (GRPO: +23% macro-F1 on CheXpert, its training benchmark, and -19% on NIH):
a checkpoint that gains more than `margin` in-domain while any transfer measurement drops by more than `margin`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from components.common.medmnist_tasks import TASKS

REGIMES = ("in-domain", "within-modality", "cross-modality", "cross-dataset")


@dataclass(frozen=True)
class Regime:
    name: str  # one of REGIMES
    shift: str  # a few words on the size of the shift, shown in the transfer table


def regime_for(task: str, train_task: str, group: str | None = None) -> Regime:
    """The transfer regime of evaluation `task` (a MedMNIST flag) for a model trained on `train_task`.

    Same task: in-domain. Same modality group (radiology / microscopy / visible light): within-modality, with the
    imaging modality named so that OrganA -> OrganC (both CT) reads apart from OrganA -> Pneumonia (CT -> X-ray).
    Other group: cross-modality. A train task that is not a MedMNIST task (pmc-vqa): cross-dataset for all.
    `group` overrides the task table's group (records carry it in meta.group)."""
    if task == train_task:
        return Regime("in-domain", "same task")
    if train_task not in TASKS:
        return Regime("cross-dataset", f"trained on {train_task}, scored on MedMNIST")
    src = TASKS[train_task]
    dst = TASKS.get(task)
    dst_group = group or (dst.group if dst else None)
    if dst_group is None:
        raise ValueError(f"task {task!r} is not a MedMNIST task and no group was given; set the record's meta.group")
    if dst_group == src.group:
        if dst is not None and dst.modality != src.modality:
            return Regime("within-modality", f"larger shift: {src.modality} -> {dst.modality}")
        return Regime("within-modality", f"same modality ({src.modality})")
    return Regime("cross-modality", f"{src.group} -> {dst_group}")


def flag_benchmark_overfit(
    bench_deltas: Mapping[str, float | None],
    transfer_deltas: Mapping[str, float | None],
    margin: float,
    metric: str = "acc_at_1",
) -> list[dict]:
    """One flag per in-domain benchmark whose after-before delta exceeds +margin while at least one transfer
    measurement (regime or other benchmark) falls below -margin. Deltas are fractions (0.05 = 5 points); missing
    (None/NaN) deltas are ignored. Returns [] when the checkpoint is clean."""
    if not margin >= 0:
        raise ValueError(f"margin={margin} must be >= 0 (a fraction, e.g. 0.05 for 5 points)")

    def ok(v: float | None) -> bool:
        return v is not None and not (isinstance(v, float) and math.isnan(v))

    lost = {name: float(d) for name, d in transfer_deltas.items() if ok(d) and d < -margin}
    flags = []
    for name, d in bench_deltas.items():
        if ok(d) and d > margin and lost:
            worst = min(lost, key=lost.get)
            flags.append(
                {
                    "metric": metric,
                    "benchmark": name,
                    "benchmark_delta": float(d),
                    "lost": dict(sorted(lost.items(), key=lambda kv: kv[1])),
                    "message": (
                        f"{metric}: wins {name} ({d:+.1%}) but loses transfer on {', '.join(sorted(lost))} "
                        f"(worst {worst} {lost[worst]:+.1%}; margin {margin:.1%})"
                    ),
                }
            )
    return flags
