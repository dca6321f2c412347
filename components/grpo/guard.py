"""Support-collapse guard: Pass@K and Acc@1 on a slice of the watch set before, during and after RL.

RL sharpens: it turns support (Pass@K) into default behaviour (Acc@1). Over-sharpening shrinks the support itself,
so the sharpen step measures both on a small, fixed slice of the diagnosis set and flags `support_collapsed` when
Pass@K fell by more than a tolerance.

    pass_at_k(n=4, c=1, k=2)  -> 0.5          # 1 - C(3,2)/C(4,2)
    support_collapsed(0.80, 0.70, tolerance=0.05) -> True
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.common.stats import pass_at_k  # the one unbiased estimator the project uses


def support_collapsed(pass_before: float, pass_after: float, tolerance: float = 0.05) -> bool:
    """True when Pass@K dropped by more than `tolerance` (absolute, as a fraction 0-1; 1e-9 absorbs float noise)."""
    return (pass_before - pass_after) > tolerance + 1e-9


@dataclass
class SupportMeasurement:
    n_questions: int
    k: int
    pass_at_k: float
    acc_at_1: float

    def as_dict(self) -> dict[str, Any]:
        return {"n_questions": self.n_questions, "k": self.k, "pass_at_k": self.pass_at_k, "acc_at_1": self.acc_at_1}


def measure_support(
    model, processor, records, dataset_dir: str | Path, *, k: int, fmt: str, max_new_tokens: int, seed: int,
    temperature: float = 0.7, top_p: float = 0.9, batch_size: int = 8,
) -> SupportMeasurement:
    """Pass@K (K samples, unbiased estimator with n = K) and greedy Acc@1 of an in-memory model on `records`."""
    from components.common.answers import parse_answer
    from components.common.prompts import build_messages
    from components.common.records import open_image
    from components.common.sampling import Prompt, SamplingConfig, TransformersBackend

    if hasattr(model, "get_base_model"):  # a PEFT model mid-training: its base carries the live adapters
        model = model.get_base_model()
    cfg = SamplingConfig(
        temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed,
        device=str(model.device),
    )
    backend = TransformersBackend("", cfg, model=model, processor=processor)
    prompts = [Prompt(build_messages(r, fmt), open_image(dataset_dir, r)) for r in records]
    was_training = model.training
    model.eval()
    try:
        samples, greedy = backend.sample_and_greedy(prompts, k)
    finally:
        model.train(was_training)
    passes, hits = [], []
    for rec, outs, g in zip(records, samples, greedy, strict=True):
        c = sum(parse_answer(o, rec.options).letter == rec.answer for o in outs)
        passes.append(pass_at_k(len(outs), c, k))
        hits.append(1.0 if parse_answer(g, rec.options).letter == rec.answer else 0.0)
    n = len(records)
    return SupportMeasurement(n, k, sum(passes) / n if n else 0.0, sum(hits) / n if n else 0.0)


def make_support_watch_callback(measure, every_steps: int, history: list):
    """A transformers TrainerCallback that calls `measure()` every `every_steps` optimizer steps and appends
    `{"step", "pass_at_k", "acc_at_1"}` to `history` (and to the trainer's logs)."""
    from transformers import TrainerCallback

    class SupportWatchCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if every_steps > 0 and state.global_step % every_steps == 0 and state.global_step < state.max_steps:
                m = measure()
                history.append({"step": state.global_step, "pass_at_k": m.pass_at_k, "acc_at_1": m.acc_at_1})
            return control

    return SupportWatchCallback()
