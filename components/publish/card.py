"""The model card published with a MedBridge model: pure functions of the lineage records, diagnosis.json and
evaluate's results.json (no file access here).

    text = model_card(CardInputs(name=..., model_lineage=..., diagnosis=..., results=..., ...))

Sections: what the model is and where it came from, intended use (research, not clinical use), why this training
(the diagnosis), the training data (every curated dataset in the model's lineage), evaluation with 95% bootstrap
intervals (per benchmark, per transfer regime), limitations and the lineage chain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from components.common.markdown import md_table

SYNTHETIC_BANNER = (
    "> **SYNTHETIC.** This model was built from generated inputs (a random-weight demo model and/or synthetic data in "
    "the real formats). Every number below is a plumbing check, not a medical result.\n"
)
INTENDED_USE = """\
**Research use only. Not for clinical use.** This model is a research artifact for studying post-training of
medical vision-language models (when supervised bridging or reinforcement learning helps). It is not a medical
device, has not been clinically validated, and must not be used to diagnose, triage, treat or otherwise inform the
care of any patient.

- Intended users: ML researchers and engineers reproducing or extending MedBridge's experiments.
- Intended uses: benchmark evaluation, ablations, comparison with other checkpoints, audits of how it was made.
- Out of scope: any clinical or patient-facing use; decisions about individuals; use on data unlike the training
  and evaluation data below (other modalities, languages, populations, image acquisition) without new evaluation.
"""
# Training parameters shown per training step (the full configuration is in the lineage records).
TRAIN_KEYS = ("max_steps", "learning_rate", "lora", "num_generations", "consistency_bonus", "per_device_batch_size",
              "prompt_format", "seed")


@dataclass
class CardInputs:
    name: str
    model_lineage: dict[str, Any]
    diagnosis: dict[str, Any]
    results: dict[str, Any]
    results_lineage: dict[str, Any] = field(default_factory=dict)
    uri: str = ""
    data_cards: list[str] = field(default_factory=list)  # file names published under data_cards/
    synthetic: bool = False


def fmt_ci(value: float | None, ci: list[float] | None = None, signed: bool = False) -> str:
    """0.4123, [0.35, 0.47] -> '41.2% [35.0, 47.0]'; missing or NaN -> 'n/a'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    text = f"{100 * value:+.1f}%" if signed else f"{100 * value:.1f}%"
    if ci and len(ci) == 2 and not any(c is None or math.isnan(c) for c in ci):
        text += f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    return text


def _k(results: dict[str, Any]) -> str:
    return str(results.get("k", "K"))


def metric_rows(entries: dict[str, dict], k: str) -> list[list[str]]:
    """One row per benchmark / regime: n, base and trained Acc@1 and Pass@K with intervals, paired deltas."""
    rows = []
    for name, e in entries.items():
        base, trained, delta = e.get("base", {}), e.get("trained", {}), e.get("delta", {})
        ci_b, ci_t = base.get("ci", {}), trained.get("ci", {})
        rows.append([
            name,
            str(trained.get("n", "")),
            fmt_ci(base.get("acc_at_1"), ci_b.get("acc_at_1")),
            fmt_ci(trained.get("acc_at_1"), ci_t.get("acc_at_1")),
            fmt_ci(delta.get("acc_at_1", {}).get("value"), delta.get("acc_at_1", {}).get("ci"), signed=True),
            fmt_ci(trained.get("pass_at_k", {}).get(k), ci_t.get("pass_at_k")),
            fmt_ci(delta.get("pass_at_k", {}).get("value"), delta.get("pass_at_k", {}).get("ci"), signed=True),
        ])
    return rows


def _history(lineage: dict[str, Any]) -> list[dict[str, Any]]:
    own = {k: v for k, v in lineage.items() if k != "history"}
    return [*lineage.get("history", []), own]


def training_data_rows(lineage: dict[str, Any]) -> list[list[str]]:
    """The curated datasets in the model's lineage (artifact, summary, content hash)."""
    rows = []
    for h in _history(lineage):
        if h.get("step") == "curate" and h.get("artifact") not in ("curation_report", "medmnist_data"):
            rows.append([str(h.get("artifact")), str(h.get("summary", "")), str(h.get("sha256", ""))[:12]])
    return rows


def training_rows(lineage: dict[str, Any]) -> list[list[str]]:
    rows = []
    for h in _history(lineage):
        if h.get("step") in ("sft", "grpo"):
            params = h.get("params", {})
            shown = ", ".join(f"{k}={params[k]}" for k in TRAIN_KEYS if k in params)
            rows.append([str(h["step"]), str(h.get("sha256", ""))[:12], shown, str(h.get("summary", ""))])
    return rows


def lineage_rows(lineage: dict[str, Any]) -> list[list[str]]:
    return [
        [str(h.get("step")), str(h.get("artifact")), str(h.get("sha256", ""))[:12], str(h.get("code_version", "")),
         str(h.get("created_at", ""))]
        for h in _history(lineage)
    ]


def model_card(c: CardInputs) -> str:
    lin, dia, res = c.model_lineage, c.diagnosis, c.results
    decision = dia.get("decision", {})
    overall = dia.get("overall", {})
    k = _k(res)
    parts = [f"# Model card: {c.name}\n"]
    if c.synthetic:
        parts.append(SYNTHETIC_BANNER)
    parts.append(
        "\n".join([
            f"- Model content hash (sha256, `model/` without lineage.json): `{lin.get('sha256', '')}`",
            f"- Base model: `{(res.get('models') or {}).get('base', dia.get('model_ref', ''))}`",
            f"- Produced by step `{lin.get('step', '')}` ({lin.get('summary', '')}), {lin.get('created_at', '')}",
            f"- Code: {lin.get('code_version', '')}",
            f"- Published at: `{c.uri}`" if c.uri else "- Not uploaded (no publish URI was given)",
        ]) + "\n"
    )
    parts.append("## Intended use\n\n" + INTENDED_USE)
    parts.append(
        "## Why this training\n\n"
        f"Branch: **{decision.get('branch', 'n/a')}**{' (forced by the operator)' if decision.get('forced') else ''}. "
        f"{decision.get('rule', '')}\n\n"
        f"Before training (diagnosis set, K={dia.get('k', k)}): Acc@1 {fmt_ci(overall.get('acc_at_1'), overall.get('ci', {}).get('acc_at_1'))}, "
        f"Pass@K {fmt_ci((overall.get('pass_at_k') or {}).get(str(dia.get('k', k))), overall.get('ci', {}).get('pass_at_k'))}.\n"
    )
    data = training_data_rows(lin)
    parts.append(
        "## Training data\n\n"
        + (md_table(["dataset", "what", "sha256"], data) + "\n" if data else "No curated dataset is recorded in the model's lineage.\n")
        + ("\nDataset cards: " + ", ".join(f"`data_cards/{n}`" for n in c.data_cards) + "\n" if c.data_cards else "")
        + "\nSources: PMC-VQA (questions from PubMed Central figures, modality-labelled and balanced) and MedMNIST-v2 "
        "tasks as multiple-choice questions (train split for training, val for diagnosis, test for evaluation).\n"
    )
    train = training_rows(lin)
    if train:
        parts.append("## Training\n\n" + md_table(["step", "sha256", "settings", "summary"], train) + "\n")
    sampling = res.get("sampling", {})
    ev = [
        "## Evaluation\n",
        f"Base vs trained model on the same questions; K={k} samples per question (temperature "
        f"{sampling.get('temperature', 'n/a')}, top-p {sampling.get('top_p', 'n/a')}), prompt format "
        f"`{res.get('prompt_format', '')}`. Brackets: 95% bootstrap intervals; deltas use paired intervals.\n",
    ]
    head = ["", "n", "base Acc@1", "trained Acc@1", "Δ Acc@1", f"trained Pass@{k}", f"Δ Pass@{k}"]
    if res.get("benchmarks"):
        ev.append("### Benchmarks\n\n" + md_table(["benchmark", *head[1:]], metric_rows(res["benchmarks"], k)) + "\n")
    regimes = (res.get("transfer") or {}).get("regimes", {})
    if regimes:
        ev.append(
            f"### Transfer from `{res.get('train_task', '')}` (MedMNIST-v2 test questions)\n\n"
            + md_table(["regime", *head[1:]], metric_rows(regimes, k)) + "\n"
        )
    if not res.get("benchmarks") and not regimes:
        ev.append("No benchmark was scored.\n")
    parts.append("\n".join(ev))
    flags = (res.get("overfit") or {}).get("flags", [])
    limits = [
        "- Scores are on the benchmarks and MedMNIST-v2 tasks above only; they say nothing about other data.",
        "- Multiple-choice accuracy is not diagnostic accuracy; no clinician reviewed the outputs.",
    ]
    if flags:
        limits.append(f"- **Benchmark overfit flags ({len(flags)})**: the model improved on its training task but lost "
                      "transfer; see `results/results.json` (`overfit.flags`).")
    if c.synthetic:
        limits.append("- Built from synthetic inputs: the numbers measure nothing medical.")
    parts.append("## Limitations\n\n" + "\n".join(limits) + "\n")
    parts.append(
        "## Lineage\n\nEvery artifact carries `lineage.json` (content hash, step, inputs, parameters, code version); "
        "this publication's own `lineage.json` holds the whole chain:\n\n"
        + md_table(["step", "artifact", "sha256", "code", "created"], lineage_rows(lin)) + "\n"
    )
    return "\n".join(parts)
