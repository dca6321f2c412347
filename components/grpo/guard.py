"""Support guard: chance-corrected Pass@K and Acc@1 on a fixed watch slice during RL, and what to do when support
collapses.

RL sharpens: it turns support (Pass@K) into default behaviour (Acc@1). Over-sharpening shrinks the support itself.
The sharpen step measures both on a small, fixed slice of the diagnosis set before training, every
`watch_every_steps` optimizer steps (the steps it also saves a checkpoint at) and after training, and acts:

    collapsed   the upper end of the corrected Pass@K interval is below the starting value minus the tolerance
    ship        without a collapse, the trained model; after one, the watch point before the collapse with the
                highest corrected Acc@1 among those whose corrected Pass@K stayed within the tolerance of the start
                (ties: higher Pass@K, then the earlier step); step 0 means the starting model itself

Measuring (`measure_support`, through the shared measurement harness) is one function; everything that decides (`summarize_support`, `collapsed`,
`within_tolerance`, `guard_decision`) is a pure function of its outcomes and the watch history.

Chance correction (components.common.stats), per watched question with C options and K samples:
    k_q = correction_k(C, K, 0.5); corrected pass = corrected(pass@k_q, chance_pass_at_k(C, k_q));
    corrected Acc@1 = corrected(greedy correct, 1/C); intervals: mean_ci over questions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from components.common.stats import (
    chance_pass_at_k,
    corrected,
    correction_k,
    mean,
    mean_ci,
    pass_at_k,
)

CHANCE_CEILING = 0.5
EPS = 1e-9


@dataclass(frozen=True)
class QuestionOutcome:
    n_options: int
    n_samples: int
    n_correct: int
    greedy_correct: bool


def summarize_support(outcomes: list[QuestionOutcome], k: int, *, seed: int = 0) -> dict[str, Any]:
    """One watch point: raw Pass@K and Acc@1, and their chance-corrected values with 95% bootstrap intervals."""
    if not outcomes:
        raise ValueError("the support watch measured no question")
    raw_pass, raw_acc, c_pass, c_acc = [], [], [], []
    for o in outcomes:
        kq = correction_k(o.n_options, k, CHANCE_CEILING)
        raw_pass.append(pass_at_k(o.n_samples, o.n_correct, k))
        raw_acc.append(1.0 if o.greedy_correct else 0.0)
        c_pass.append(corrected(pass_at_k(o.n_samples, o.n_correct, kq), chance_pass_at_k(o.n_options, kq)))
        c_acc.append(corrected(raw_acc[-1], 1.0 / o.n_options))
    return {
        "n_questions": len(outcomes),
        "k": k,
        "pass_at_k": mean(raw_pass),
        "acc_at_1": mean(raw_acc),
        "pass_corrected": mean(c_pass),
        "pass_corrected_ci": mean_ci(c_pass, seed=seed),
        "acc_corrected": mean(c_acc),
        "acc_corrected_ci": mean_ci(c_acc, seed=seed),
    }


def collapsed(point: dict, baseline: dict, tolerance: float) -> bool:
    """Support collapsed at `point`: its corrected Pass@K interval lies wholly below the start minus `tolerance`."""
    return point["pass_corrected_ci"][1] < baseline["pass_corrected"] - tolerance - EPS


def within_tolerance(point: dict, baseline: dict, tolerance: float) -> bool:
    """`point`'s corrected Pass@K (its estimate) is at least the start minus `tolerance`."""
    return point["pass_corrected"] >= baseline["pass_corrected"] - tolerance - EPS


def best_before(history: list[dict], end: int, tolerance: float) -> dict:
    """Among history[:end], the points within tolerance of history[0], the one with the highest corrected Acc@1
    (ties: higher corrected Pass@K, then the earlier step). history[0] is always a candidate."""
    base = history[0]
    candidates = [h for h in history[:end] if within_tolerance(h, base, tolerance)] or [base]
    return max(candidates, key=lambda h: (h["acc_corrected"], h["pass_corrected"], -h["step"]))


@dataclass(frozen=True)
class GuardDecision:
    collapsed: bool
    collapse_step: int | None
    ship_step: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def guard_decision(history: list[dict], tolerance: float, stop_on_collapse: bool = True) -> GuardDecision:
    """What the sharpen step ships, from its watch history (step 0 = the start, in step order)."""
    if not history:
        raise ValueError("guard_decision needs at least the starting watch point")
    base, last = history[0], history[-1]
    first = next((i for i, h in enumerate(history) if i > 0 and collapsed(h, base, tolerance)), None)
    if first is None:
        return GuardDecision(
            False, None, last["step"],
            f"support held: corrected Pass@K {_v(base)} at the start, {_v(last)} at step {last['step']} "
            f"(collapse = interval below {base['pass_corrected'] - tolerance:.3f})",
        )
    point = history[first]
    lo, hi = point["pass_corrected_ci"]
    what = (f"support collapsed at step {point['step']}: corrected Pass@K {point['pass_corrected']:.3f} "
            f"[{lo:.3f}, {hi:.3f}] fell below the start {base['pass_corrected']:.3f} minus {tolerance}")
    if not stop_on_collapse:
        return GuardDecision(True, point["step"], last["step"], f"{what}; stop_on_collapse is off: shipping step "
                                                               f"{last['step']} anyway")
    best = best_before(history, first, tolerance)
    which = "the starting model" if best["step"] == 0 else f"the checkpoint of step {best['step']}"
    return GuardDecision(
        True, point["step"], best["step"],
        f"{what}; shipping {which} (corrected Acc@1 {best['acc_corrected']:.3f}, corrected Pass@K "
        f"{best['pass_corrected']:.3f}), the best before the collapse",
    )


def _v(h: dict) -> str:
    lo, hi = h["pass_corrected_ci"]
    return f"{h['pass_corrected']:.3f} [{lo:.3f}, {hi:.3f}]"


def measure_support(
    model, processor, records, dataset_dir: str | Path, *, k: int, fmt: str, max_new_tokens: int, seed: int,
    temperature: float = 0.7, top_p: float = 0.9, batch_size: int = 8,
) -> list[QuestionOutcome]:
    """K samples and one greedy answer per watched question from an in-memory model with whole weights, asked and
    read by the project's one measurement harness (components.common.harness: the same prompts, sampling and answer
    reading as the diagnosis and the evaluation; the guard runs no judge model inside a training pod).

    Under several processes each measures its share of the questions and the outcomes are gathered, in order, on
    every process (so every process takes the same decision)."""
    from components.common.harness import HarnessConfig, measure
    from components.common.sampling import TransformersBackend
    from components.common.training import gather_objects, process_rank, world_size

    if hasattr(model, "get_base_model"):  # a PEFT model mid-training: its base carries the live adapters
        model = model.get_base_model()
    mine = list(range(process_rank(), len(records), world_size()))
    outcomes: list[tuple[int, QuestionOutcome]] = []
    if mine:
        harness = HarnessConfig(prompt_format=fmt, k=k, max_new_tokens=max_new_tokens, temperature=temperature,
                                top_p=top_p, batch_size=batch_size, seed=seed, device=str(model.device))
        backend = TransformersBackend("", harness.sampling(), model=model, processor=processor)
        was_training = model.training
        model.eval()
        try:
            measured, _ = measure([records[i] for i in mine], dataset_dir, backend, harness)
        finally:
            model.train(was_training)
        for i, o in zip(mine, measured, strict=True):
            outcomes.append((i, QuestionOutcome(o.n_options, len(o.sample_correct), o.n_correct, o.greedy_correct)))
    merged = sorted((pair for part in gather_objects(outcomes) for pair in part), key=lambda p: p[0])
    return [o for _, o in merged]


def plot_watch(history: list[dict], path: str | Path, tolerance: float, decision: GuardDecision | None = None) -> Path:
    """A PNG of the watch history: corrected Pass@K and Acc@1 with their intervals, the collapse line, the shipped
    step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    for key, label, color in (("pass_corrected", f"Pass@{history[0]['k']} (corrected)", "#4a6fa5"),
                              ("acc_corrected", "Acc@1 (corrected)", "#0b6e4f")):
        ax.plot(steps, [h[key] for h in history], marker="o", color=color, label=label)
        ax.fill_between(steps, [h[f"{key}_ci"][0] for h in history], [h[f"{key}_ci"][1] for h in history],
                        color=color, alpha=0.15)
    ax.axhline(history[0]["pass_corrected"] - tolerance, color="#b3261e", ls="--", lw=1, label="collapse line")
    if decision is not None:
        ax.axvline(decision.ship_step, color="#8a5a00", ls=":", lw=1.5, label=f"shipped (step {decision.ship_step})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("chance-corrected score")
    ax.set_title("Support watch during RL")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    from components.common.io import atomic_file

    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
