"""Transfer regimes relative to the trained task, and the "wins its benchmark, loses transfer" flag.

    regime_for("organcmnist", "organamnist")   -> Regime("within-modality", "same modality (CT)")
    regime_for("pneumoniamnist", "organamnist") -> Regime("within-modality", "larger shift: CT -> X-ray")
    regime_for("pathmnist", "organamnist")     -> Regime("cross-modality", "radiology -> microscopy")
    regime_for("pathmnist", "pmc-vqa")         -> Regime("cross-dataset", "trained on pmc-vqa, scored on MedMNIST")
    regime_for("pathmnist", "pmc-vqa", sft_tasks={"pathmnist"}) -> Regime("in-domain", "trained on by the SFT step")

The guard is the ChexReason failure mode (GRPO: +23% macro-F1 on CheXpert, its training benchmark, and -19% on NIH),
decided on the paired intervals the evaluation computes (`transfer_guard`): a checkpoint "wins its benchmark, loses
transfer" only when the in-domain gain's 95% interval lies above 0 AND some transfer change lies confidently below
-margin, confidently meaning its one-sided bootstrap test rejects after Holm's correction over all transfer checks of
the run (family-wise error <= alpha). `flag_benchmark_overfit` is the point-estimate screen it replaces, kept for
quick looks at deltas without intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

from components.common.medmnist_tasks import TASKS
from components.common.stats import holm

REGIMES = ("in-domain", "within-modality", "cross-modality", "cross-dataset")


@dataclass(frozen=True)
class Regime:
    name: str  # one of REGIMES
    shift: str  # a few words on the size of the shift, shown in the transfer table


def regime_for(task: str, train_task: str, group: str | None = None, sft_tasks: Iterable[str] = ()) -> Regime:
    """The transfer regime of evaluation `task` (a MedMNIST flag) for a model trained on `train_task`.

    Same task: in-domain. Same modality group (radiology / microscopy / visible light): within-modality, with the
    imaging modality named so that OrganA -> OrganC (both CT) reads apart from OrganA -> Pneumonia (CT -> X-ray).
    Other group: cross-modality. A train task that is not a MedMNIST task (pmc-vqa): cross-dataset for all.
    `group` overrides the task table's group (records carry it in meta.group). A task the bridge's SFT step trained on
    (`sft_tasks`) is in-domain too: its gain is no transfer."""
    if task == train_task:
        return Regime("in-domain", "same task")
    if task in set(sft_tasks):
        return Regime("in-domain", "trained on by the SFT step (bridge)")
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


def transfer_guard(
    bench: Mapping[str, Mapping],
    transfer: Mapping[str, Mapping],
    margin: float,
    alpha: float = 0.05,
    metrics: tuple[str, ...] = ("acc_at_1", "pass_at_k"),
) -> dict:
    """"Wins the benchmark, loses transfer", decided on paired intervals with Holm's correction (pure).

    `bench` / `transfer`: name -> a paired delta as `scoring.paired_delta` returns it ({metric: {"value", "ci",
    "p_loss"}}); `bench` holds the in-domain measurements (the task trained for), `transfer` the others (regimes,
    other benchmarks). A gain counts when the interval of its change lies above 0; a loss when the one-sided test
    "change < -margin" rejects after Holm's correction over every (transfer check, metric) of the run. A flag is
    raised per metric with at least one gain and one loss. Returns {"flags", "checks", "m", "alpha", "margin"}."""
    if not margin >= 0:
        raise ValueError(f"margin={margin} must be >= 0 (a fraction, e.g. 0.05 for 5 points)")

    def usable(d) -> bool:
        return isinstance(d, Mapping) and d.get("value") is not None and not (
            isinstance(d["value"], float) and math.isnan(d["value"]))

    pvalues = {}
    for name, entry in transfer.items():
        for metric in metrics:
            d = entry.get(metric) if isinstance(entry, Mapping) else None
            if usable(d) and d.get("p_loss") is not None:
                pvalues[f"{name} · {metric}"] = float(d["p_loss"])
    tested = holm(pvalues, alpha) if pvalues else {}
    checks = []
    for key, res in tested.items():
        name, metric = key.rsplit(" · ", 1)
        d = transfer[name][metric]
        checks.append({"check": key, "name": name, "metric": metric, "value": d["value"], "ci": d.get("ci"), **res})
    flags = []
    for metric in metrics:
        gains = {n: e[metric] for n, e in bench.items()
                 if isinstance(e, Mapping) and usable(e.get(metric)) and _lo(e[metric]) > 0}
        lost = {c["name"]: c["value"] for c in checks if c["metric"] == metric and c["rejected"]}
        for name, g in gains.items():
            if not lost:
                continue
            worst = min(lost, key=lost.get)
            flags.append({
                "metric": metric,
                "benchmark": name,
                "benchmark_delta": float(g["value"]),
                "benchmark_ci": list(g.get("ci") or []),
                "lost": dict(sorted(lost.items(), key=lambda kv: kv[1])),
                "message": (
                    f"{metric}: wins {name} ({g['value']:+.1%}, 95% CI above 0) but loses transfer on "
                    f"{', '.join(sorted(lost))} (worst {worst} {lost[worst]:+.1%}; below -{margin:.1%} after Holm over "
                    f"{len(checks)} transfer checks, alpha {alpha})"
                ),
            })
    return {"flags": flags, "checks": checks, "m": len(checks), "alpha": alpha, "margin": margin}


def _lo(d: Mapping) -> float:
    ci = d.get("ci") or [float("nan"), float("nan")]
    lo = ci[0]
    return float("-inf") if lo is None or (isinstance(lo, float) and math.isnan(lo)) else float(lo)
