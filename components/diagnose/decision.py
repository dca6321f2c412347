"""The branch decision and the re-diagnosis gate, pure functions of the measured numbers.

Boundary-aware recipe (MedBridgeRL), decided on the bootstrap interval of the CHANCE-CORRECTED Pass@K (a uniform
guesser scores 0, an always-right model 1; components.common.harness), not on a point estimate and not on raw
Pass@K, which a guesser among 4 options already brings to 0.99 at K = 16:

    ci_high(corrected Pass@K) <  tau  -> bridge   (support is confidently below the reliability threshold)
    ci_low(corrected Pass@K)  >= tau  -> sharpen  (support is confidently at or above it)
    otherwise (the interval straddles tau) -> the `ambiguous` policy (default bridge: widening support first is
                                              the conservative choice), and the record says it was ambiguous.

The same rule is applied overall and per modality group of the set that decides (the held-out slice of the
distribution RL trains on when there is one). Weak tasks and weak modalities, which choose the bridge's SFT data, are
those whose corrected Pass@K lies below tau. An operator override (`force` = bridge | sharpen) sets the overall
branch and is recorded as forced, with the measured numbers and the branch the rule would have chosen.

After the bridge the SFT model is diagnosed again on the same set and the same rule gates RL (`gate_after_bridge`):
what the rule would call "bridge" (support still too low) stops the run before GRPO; "sharpen" proceeds. An operator
can force GRPO anyway (`force_rl`), recorded as forced. The pipeline's DAG branches only on `Decision.branch` and
`Gate.outcome`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

BRANCHES = ("bridge", "sharpen")
FORCE_CHOICES = ("auto", *BRANCHES)
GATE_OUTCOMES = ("proceed", "stop")


@dataclass
class Decision:
    branch: str  # "bridge" | "sharpen": what the pipeline runs
    rule: str  # the rule and the numbers that chose the branch
    forced: bool
    measured_branch: str  # what the rule chose from the numbers (== branch unless forced)
    ambiguous: bool  # the interval straddled tau
    per_modality: dict[str, dict] = field(default_factory=dict)  # group -> {"branch", "rule", "ambiguous"}
    weak_tasks: list[str] = field(default_factory=list)  # tasks whose corrected Pass@K is below tau
    weak_modalities: list[str] = field(default_factory=list)  # groups whose branch is bridge
    decided_on: str = ""  # the question set whose numbers chose the branch

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Gate:
    outcome: str  # "proceed" (run GRPO) | "stop" (end the run after the bridge)
    rule: str
    forced: bool
    measured_outcome: str
    ambiguous: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _check(tau: float, force: str, ambiguous: str) -> None:
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau={tau} must lie in [0, 1] (a corrected Pass@K threshold as a fraction)")
    if force not in FORCE_CHOICES:
        raise ValueError(f"force={force!r} is not known; choose one of {', '.join(FORCE_CHOICES)}")
    if ambiguous not in BRANCHES:
        raise ValueError(f"ambiguous={ambiguous!r} is not known; choose one of {', '.join(BRANCHES)}")


def corrected_support(m: dict) -> tuple[float, float, float]:
    """(point, ci low, ci high) of the chance-corrected Pass@K of a metrics block M."""
    c = m.get("corrected")
    if not isinstance(c, dict) or "pass_at_k" not in c or "ci" not in c:
        raise ValueError("metrics block has no 'corrected' Pass@K; it predates the chance correction (re-diagnose)")
    lo, hi = c["ci"]["pass_at_k"]
    return float(c["pass_at_k"]), float(lo), float(hi)


def _k_text(m: dict) -> str:
    used = m["corrected"].get("k_used") or {}
    return ", ".join(f"k = {k} for {c} options" for c, k in sorted(used.items(), key=lambda kv: int(kv[0])))


def numbers(m: dict, tau: float) -> str:
    """The numbers a rule text quotes: corrected Pass@K with its interval and k, raw Pass@K beside chance, Acc@1."""
    p, lo, hi = corrected_support(m)
    big_k = max(int(x) for x in m["pass_at_k"])
    raw = m["pass_at_k"][str(big_k)]
    chance = ((m.get("chance") or {}).get("pass_at_k") or {}).get(str(big_k))
    chance_text = f", chance {chance:.3f}" if chance is not None else ""
    return (
        f"corrected Pass@K = {p:.3f} (95% CI {lo:.3f} to {hi:.3f}; {_k_text(m)}; n = {m['n']}), "
        f"raw Pass@{big_k} = {raw:.3f}{chance_text}, Acc@1 = {m['acc_at_1']:.3f}, tau = {tau:.2f}"
    )


def rule_for(m: dict, tau: float, ambiguous: str = "bridge") -> tuple[str, str, bool]:
    """(branch, rule text with the numbers, ambiguous?) for one metrics block M."""
    _, lo, hi = corrected_support(m)
    nums = numbers(m, tau)
    if hi < tau:
        return "bridge", f"bridge: the whole interval of the corrected Pass@K lies below tau; {nums}", False
    if lo >= tau:
        return "sharpen", f"sharpen: the whole interval of the corrected Pass@K lies at or above tau; {nums}", False
    return (
        ambiguous,
        f"{ambiguous}: the interval of the corrected Pass@K straddles tau, so the ambiguous-case policy "
        f"({ambiguous}) applies; {nums}",
        True,
    )


def weak(blocks: dict[str, dict], tau: float) -> list[str]:
    """Names whose corrected Pass@K point estimate lies below tau (the SFT data is chosen for them)."""
    return [name for name, m in blocks.items() if corrected_support(m)[0] < tau]


def decide(
    overall: dict,
    per_modality: dict[str, dict] | None = None,
    tau: float = 0.5,
    force: str = "auto",
    ambiguous: str = "bridge",
    per_task: dict[str, dict] | None = None,
    decided_on: str = "",
) -> Decision:
    """Decide the branch from the overall metrics block and the per-modality ones (see the module docstring)."""
    _check(tau, force, ambiguous)
    measured, rule, amb = rule_for(overall, tau, ambiguous)
    if decided_on:
        rule = f"{rule} [decided on {decided_on}]"
    per_mod = {}
    for group, m in (per_modality or {}).items():
        b, r, a = rule_for(m, tau, ambiguous)
        per_mod[group] = {"branch": b, "rule": r, "ambiguous": a}
    weak_modalities = [g for g, d in per_mod.items() if d["branch"] == "bridge"]
    weak_tasks = weak(per_task or {}, tau)
    if force == "auto":
        return Decision(measured, rule, False, measured, amb, per_mod, weak_tasks, weak_modalities, decided_on)
    forced_rule = f"{force}: FORCED by the operator (force_branch={force}); the rule alone would have chosen {rule}"
    return Decision(force, forced_rule, True, measured, amb, per_mod, weak_tasks, weak_modalities, decided_on)


def gate_after_bridge(overall: dict, tau: float = 0.5, force_rl: bool = False, ambiguous: str = "bridge") -> Gate:
    """Run GRPO after the bridge, or stop: the decision rule applied to the SFT model's re-diagnosis."""
    _check(tau, "auto", ambiguous)
    branch, rule, amb = rule_for(overall, tau, ambiguous)
    measured = "proceed" if branch == "sharpen" else "stop"
    nums = rule.split("; ", 1)[1]
    if measured == "proceed":
        text = f"proceed: after the bridge the rule says sharpen{' (ambiguous policy)' if amb else ''}; {nums}"
    else:
        text = (
            f"stop: after the bridge the corrected support is still {'not confidently at or above' if amb else 'below'} "
            f"tau, so GRPO is not run; {nums}"
        )
    if force_rl and measured == "stop":
        return Gate("proceed", f"proceed: FORCED by the operator (force_rl); the re-diagnosis alone says {text}",
                    True, measured, amb)
    return Gate(measured, text, False, measured, amb)
