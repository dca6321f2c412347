"""The branch decision, a pure function of the measured numbers: bridge (SFT) or sharpen (GRPO).

Boundary-aware recipe (MedBridgeRL) decided on the bootstrap interval of Pass@K, not its point estimate:

    ci_high(Pass@K) <  tau  -> bridge   (support is confidently below the reliability threshold)
    ci_low(Pass@K)  >= tau  -> sharpen  (support is confidently at or above it)
    otherwise (the interval straddles tau) -> the `ambiguous` policy (default bridge: widening support first is
                                              the conservative choice), and the record says it was ambiguous.

The same rule is applied overall and per modality group. An operator override (`force` = bridge | sharpen) sets the
overall branch and is recorded as forced, with the measured numbers and the branch the rule would have chosen.
The pipeline's DAG branches only on `Decision.branch`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

BRANCHES = ("bridge", "sharpen")
FORCE_CHOICES = ("auto", *BRANCHES)


@dataclass
class Decision:
    branch: str  # "bridge" | "sharpen": what the pipeline runs
    rule: str  # the rule and the numbers that chose the branch
    forced: bool
    measured_branch: str  # what the rule chose from the numbers (== branch unless forced)
    ambiguous: bool  # the interval straddled tau
    per_modality: dict[str, dict] = field(default_factory=dict)  # group -> {"branch", "rule", "ambiguous"}
    weak_tasks: list[str] = field(default_factory=list)  # tasks whose Pass@K point estimate is below tau
    weak_modalities: list[str] = field(default_factory=list)  # groups whose branch is bridge

    def to_dict(self) -> dict:
        return asdict(self)


def _check(tau: float, force: str, ambiguous: str) -> None:
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau={tau} must lie in [0, 1] (a Pass@K threshold as a fraction)")
    if force not in FORCE_CHOICES:
        raise ValueError(f"force={force!r} is not known; choose one of {', '.join(FORCE_CHOICES)}")
    if ambiguous not in BRANCHES:
        raise ValueError(f"ambiguous={ambiguous!r} is not known; choose one of {', '.join(BRANCHES)}")


def rule_for(m: dict, tau: float, ambiguous: str = "bridge") -> tuple[str, str, bool]:
    """(branch, rule text with the numbers, ambiguous?) for one metrics block M (Pass@K at the largest k)."""
    k = max(int(x) for x in m["pass_at_k"])
    p = m["pass_at_k"][str(k)]
    lo, hi = m["ci"]["pass_at_k"]
    nums = f"Pass@{k} = {p:.3f} (95% CI {lo:.3f}-{hi:.3f}, n = {m['n']}), Acc@1 = {m['acc_at_1']:.3f}, tau = {tau:.2f}"
    if hi < tau:
        return "bridge", f"bridge: the whole interval of Pass@{k} lies below tau; {nums}", False
    if lo >= tau:
        return "sharpen", f"sharpen: the whole interval of Pass@{k} lies at or above tau; {nums}", False
    return (
        ambiguous,
        f"{ambiguous}: the interval of Pass@{k} straddles tau, so the ambiguous-case policy ({ambiguous}) applies; {nums}",
        True,
    )


def decide(
    overall: dict,
    per_modality: dict[str, dict] | None = None,
    tau: float = 0.5,
    force: str = "auto",
    ambiguous: str = "bridge",
    per_task: dict[str, dict] | None = None,
) -> Decision:
    """Decide the branch from the overall metrics block and the per-modality ones (see the module docstring)."""
    _check(tau, force, ambiguous)
    measured, rule, amb = rule_for(overall, tau, ambiguous)
    per_mod = {}
    for group, m in (per_modality or {}).items():
        b, r, a = rule_for(m, tau, ambiguous)
        per_mod[group] = {"branch": b, "rule": r, "ambiguous": a}
    weak_modalities = [g for g, d in per_mod.items() if d["branch"] == "bridge"]
    weak_tasks = []
    for task, m in (per_task or {}).items():
        k = max(int(x) for x in m["pass_at_k"])
        if m["pass_at_k"][str(k)] < tau:
            weak_tasks.append(task)
    if force == "auto":
        return Decision(measured, rule, False, measured, amb, per_mod, weak_tasks, weak_modalities)
    forced_rule = f"{force}: FORCED by the operator (force_branch={force}); the rule alone would have chosen {rule}"
    return Decision(force, forced_rule, True, measured, amb, per_mod, weak_tasks, weak_modalities)
