"""The one measurement harness of the diagnosis, the evaluation and the GRPO support guard.

Published numbers move by 10+ points between harnesses, so every number of a run is measured one way: the same
prompt format, sampling settings, backend, image pixel bounds and answer reading, all held by one `HarnessConfig`
(the diagnose and evaluate launchers' flags are its fields) and recorded with every result (`HarnessConfig.record`).

    harness = HarnessConfig(k=16, max_new_tokens=2048, min_pixels=1280*28*28, max_pixels=16384*28*28,
                            judge_model="Qwen/Qwen2.5-VL-32B-Instruct", judge_mode="all")
    backend, judge = open_backends(harness, "Qwen/Qwen2.5-VL-7B-Instruct")
    outcomes, rows = measure(records, "runs/x/rl_diag_set", backend, harness, judge=judge)
    m = support_summary(outcomes, harness.k, ceiling=harness.chance_ceiling)   # raw + chance-corrected, intervals

A model already in memory (the GRPO guard, mid-training) is measured the same way through
`TransformersBackend("", harness.sampling(), model=model, processor=processor)`.

What one question's outcome holds (`QuestionOutcome`): the greedy answer (Acc@1) and n sampled answers (Pass@k),
each read by `components.common.answers.parse_answer` (optionally judged, see `JUDGE_MODES`), whether each followed
the <answer> format and whether it was cut at `max_new_tokens` (truncated: counted and shown, never silently
wrong), and the question's option count, which the chance correction needs.

`support_summary` is the metrics block M of diagnosis.json (components/diagnose/README.md): Acc@1, the Pass@k
curve k = 1..K and the support gap, raw; a uniform guesser's curve beside it (`chance`); and the chance-corrected
Acc@1 and Pass@K (`corrected`), per question from its own option count C:

    k_q             = correction_k(C, K, ceiling)                     largest k with 1 - (1 - 1/C)^k <= ceiling
    corrected pass  = (pass@k_q - chance_k_q) / (1 - chance_k_q)      0 = guessing, 1 = always right
    corrected Acc@1 = (greedy correct - 1/C) / (1 - 1/C)

then the mean over questions, with percentile-bootstrap intervals (questions resampled; components.common.stats).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from components.common.answers import (
    JUDGE_MODES,
    JudgeItem,
    OpenJudgeItem,
    check_judge_mode,
    exact_match,
    judge_answers,
    judge_open,
    parse_answer,
    read_open_answer,
    token_f1,
)
from components.common.prompts import PROMPT_FORMATS, build_messages, build_open_messages
from components.common.records import MCQRecord, OpenRecord, open_image
from components.common.sampling import BACKENDS, Prompt, SamplingBackend, SamplingConfig, is_truncated, make_backend
from components.common.stats import (
    chance_pass_at_k,
    correction_k,
    corrected,
    curve_ci,
    joint_ci,
    mean,
    mean_ci,
    pass_at_k,
    pass_curve,
)

HARNESS_VERSION = "1"
JUDGE_MAX_NEW_TOKENS = 32


@dataclass
class HarnessConfig:
    """How questions are asked and answers read: the diagnose and evaluate launchers' shared flags."""

    prompt_format: str = field(default="think", metadata={"help": f"prompt format: {', '.join(PROMPT_FORMATS)}"})
    k: int = field(default=16, metadata={"help": "K of Pass@K; the curve is reported for every k = 1..K"})
    n_samples: int = field(default=0, metadata={"help": "samples drawn per question (n >= k; 0 = k). More than k lowers the variance of pass@k"})
    max_new_tokens: int = field(default=256, metadata={"help": "longest completion, greedy and sampled, in tokens (the paper's code: 2048); a completion cut here counts as truncated"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature for the K samples (the paper's code: 0.7)"})
    top_p: float = field(default=0.9, metadata={"help": "nucleus sampling top-p (the paper's code: 0.9)"})
    backend: str = field(default="transformers", metadata={"help": f"sampling backend: {', '.join(BACKENDS)}"})
    batch_size: int = field(default=8, metadata={"help": "transformers: prompts per prefill batch (each decodes n+1 rows); on one H200 with a 7B model at 256 new tokens and 448 px images, 120 and 200 ran the 1,200-question diagnosis equally fast, 60 and 80 slower (benchmarks/RESULTS.md); longer completions and larger images need smaller batches (the rows' new keys/values grow with rows x new tokens)"})
    tensor_parallel_size: int = field(default=1, metadata={"help": "vllm: GPUs per model replica"})
    gpu_memory_utilization: float = field(default=0.9, metadata={"help": "vllm: fraction of GPU memory the engine may take"})
    device: str = field(default="auto", metadata={"help": "transformers: auto, cpu, cuda, cuda:N"})
    min_pixels: int = field(default=0, metadata={"help": "smallest image area after resizing, in pixels (the paper's code: 1280*28*28 = 1003520); 0 = the processor's own"})
    max_pixels: int = field(default=0, metadata={"help": "largest image area after resizing, in pixels (the paper's code: 16384*28*28 = 12845056); 0 = the processor's own"})
    liger_kernels: bool = field(default=False, metadata={"help": "transformers backend on a GPU: Liger's fused RMSNorm / SwiGLU / rotary kernels in the sampler (needs the liger-kernel package; other kernels, other rounding: recorded)"})
    judge_model: str = field(default="", metadata={"help": "LLM judge (e.g. Qwen/Qwen2.5-VL-32B-Instruct, as the paper); empty = the parser alone"})
    judge_mode: str = field(default="unreadable", metadata={"help": f"{' | '.join(JUDGE_MODES)}: judge only answers the parser cannot read, or every answer (the paper)"})
    chance_ceiling: float = field(default=0.5, metadata={"help": "chance correction: the k used per question is the largest whose guessing pass@k stays <= this (0.5: k = 1 for yes/no, 2 for 4 options)"})
    seed: int = field(default=0, metadata={"help": "seed for sampling and the bootstrap"})

    def __post_init__(self):
        if self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format={self.prompt_format!r} is not known; choose one of {', '.join(PROMPT_FORMATS)} (--prompt-format)")
        if self.k < 1:
            raise ValueError(f"k={self.k} must be >= 1 (--k)")
        if self.n_samples == 0:
            self.n_samples = self.k
        if self.n_samples < self.k:
            raise ValueError(f"n_samples={self.n_samples} is below k={self.k}: pass@k needs n >= k samples (--n-samples)")
        if not 0.0 < self.chance_ceiling < 1.0:
            raise ValueError(f"chance_ceiling={self.chance_ceiling} must lie in (0, 1), e.g. 0.5 (--chance-ceiling)")
        try:
            check_judge_mode(self.judge_mode)
        except ValueError as e:
            raise ValueError(f"{e} (--judge-mode)") from None
        self.sampling()  # validates temperature, top_p, max_new_tokens, batch_size, backend, pixel bounds

    def sampling(self) -> SamplingConfig:
        try:
            return SamplingConfig(
                backend=self.backend,
                temperature=self.temperature,
                top_p=self.top_p,
                max_new_tokens=self.max_new_tokens,
                batch_size=self.batch_size,
                seed=self.seed,
                device=self.device,
                tensor_parallel_size=self.tensor_parallel_size,
                gpu_memory_utilization=self.gpu_memory_utilization,
                min_pixels=self.min_pixels,
                max_pixels=self.max_pixels,
                max_model_len=self.max_model_len(),
                liger_kernels=self.liger_kernels,
            )
        except ValueError as e:
            raise ValueError(f"{e} (--{str(e).split('=')[0].replace('_', '-')})") from None

    def max_model_len(self) -> int:
        """vLLM's context length: room for the largest image (one token per 28x28 pixels), the question and the
        completion (at least 8,192)."""
        image_tokens = self.max_pixels // (28 * 28) if self.max_pixels else 1280
        return max(8192, image_tokens + self.max_new_tokens + 1024)

    def harness_fields(self) -> dict[str, Any]:
        """This object's harness settings alone (a subclass adds its own knobs)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(HarnessConfig)}

    def record(self) -> dict[str, Any]:
        """What results and diagnoses store under "harness": every setting that changes a measured number."""
        return {
            "version": HARNESS_VERSION,
            **{k: v for k, v in self.harness_fields().items() if k not in ("batch_size", "device", "gpu_memory_utilization")},
            "greedy": "argmax decoding, same prompt and prefill",
            "answer_reading": "components.common.answers.parse_answer (last <answer> block: letter, else one option's text)"
            + (f"; judge {self.judge_model} ({self.judge_mode})" if self.judge_model else ""),
        }


def open_backends(harness: HarnessConfig, model_ref: str) -> tuple[SamplingBackend, SamplingBackend | None]:
    """The sampling backend for `model_ref` and, when a judge model is set, the judge's (greedy, short replies).
    A judge that cannot be opened is bad input: one error naming the model, raised before the model is loaded."""
    judge = open_judge(harness)
    return make_backend(harness.sampling(), model_ref), judge


def open_judge(harness: HarnessConfig) -> SamplingBackend | None:
    if not harness.judge_model:
        return None
    cfg = dataclasses.replace(harness.sampling(), max_new_tokens=JUDGE_MAX_NEW_TOKENS, min_pixels=0, max_pixels=0)
    try:
        return make_backend(cfg, harness.judge_model)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"judge model {harness.judge_model!r} cannot be opened: {first} (--judge-model)") from None


# --------------------------------------------------------------------------------------------------------------
# One question's outcome
# --------------------------------------------------------------------------------------------------------------


@dataclass
class QuestionOutcome:
    """What the metrics need from one measured question (multiple choice, or open-ended when n_options is None)."""

    id: str
    task: str
    group: str
    answer: str  # option letter (multiple choice) or reference text (open-ended)
    n_options: int | None  # None for an open-ended question
    greedy_letter: str | None  # the reading that counts (the judge's in mode "all"); open-ended: the answer text
    greedy_correct: bool
    sample_letters: list[str | None]
    sample_correct: list[bool]
    greedy_format_ok: bool = True
    sample_format_ok: list[bool] = field(default_factory=list)
    greedy_truncated: bool = False
    sample_truncated: list[bool] = field(default_factory=list)
    greedy_f1: float | None = None  # open-ended: token F1 of the greedy answer
    judged: int = 0  # completions whose reading came from the judge

    @property
    def n_correct(self) -> int:
        return sum(self.sample_correct)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def default_group(rec: MCQRecord | OpenRecord) -> str:
    return str(rec.meta.get("group") or rec.modality)


def prompts_for(records: list[MCQRecord], dataset_dir: str | Path, fmt: str) -> list[Prompt]:
    return [Prompt(build_messages(r, fmt), open_image(dataset_dir, r)) for r in records]


def read_answers(
    records: list[MCQRecord],
    samples: list[list[str]],
    greedy: list[str],
    *,
    judge: SamplingBackend | None = None,
    judge_mode: str = "unreadable",
    group_of: Callable[[MCQRecord], str] = default_group,
) -> tuple[list[QuestionOutcome], list[dict]]:
    """Read every completion (parser, then the judge as `judge_mode` says); per-question outcomes + sample rows."""
    check_judge_mode(judge_mode)
    if len(samples) != len(records) or len(greedy) != len(records):
        raise RuntimeError(
            f"the sampling backend returned {len(samples)} sample lists and {len(greedy)} greedy answers for "
            f"{len(records)} questions"
        )
    parsed_s = [[parse_answer(c, r.options) for c in cs] for r, cs in zip(records, samples)]
    parsed_g = [parse_answer(g, r.options) for r, g in zip(records, greedy)]
    letters_s = [[p.letter for p in ps] for ps in parsed_s]
    letters_g = [p.letter for p in parsed_g]
    judged_s = [[False] * len(ps) for ps in parsed_s]
    judged_g = [False] * len(parsed_g)
    if judge is not None:
        every = judge_mode == "all"
        todo = [(i, j) for i, ps in enumerate(parsed_s) for j, p in enumerate(ps) if every or p.letter is None]
        todo += [(i, -1) for i, p in enumerate(parsed_g) if every or p.letter is None]
        items = [
            JudgeItem(records[i].question, records[i].options, samples[i][j] if j >= 0 else greedy[i]) for i, j in todo
        ]
        for (i, j), letter in zip(todo, judge_answers(judge, items)):
            if j >= 0:
                letters_s[i][j], judged_s[i][j] = letter, True
            else:
                letters_g[i], judged_g[i] = letter, True
    outcomes, rows = [], []
    for i, rec in enumerate(records):
        correct = [x == rec.answer for x in letters_s[i]]
        outcomes.append(
            QuestionOutcome(
                id=rec.id,
                task=rec.task,
                group=group_of(rec),
                answer=rec.answer,
                n_options=len(rec.options),
                greedy_letter=letters_g[i],
                greedy_correct=letters_g[i] == rec.answer,
                sample_letters=letters_s[i],
                sample_correct=correct,
                greedy_format_ok=parsed_g[i].format_ok,
                sample_format_ok=[p.format_ok for p in parsed_s[i]],
                greedy_truncated=is_truncated(greedy[i]),
                sample_truncated=[is_truncated(c) for c in samples[i]],
                judged=sum(judged_s[i]) + int(judged_g[i]),
            )
        )
        rows.append(
            {
                "id": rec.id,
                "task": rec.task,
                "group": group_of(rec),
                "answer": rec.answer,
                "n_options": len(rec.options),
                "greedy": {"completion": str(greedy[i]), "parsed": parsed_g[i].letter, "letter": letters_g[i],
                           "format_ok": parsed_g[i].format_ok, "truncated": is_truncated(greedy[i]),
                           "judged": judged_g[i], "correct": letters_g[i] == rec.answer},
                "samples": [
                    {"completion": str(c), "parsed": parsed_s[i][j].letter, "letter": letters_s[i][j],
                     "format_ok": parsed_s[i][j].format_ok, "truncated": is_truncated(c), "judged": judged_s[i][j],
                     "correct": correct[j]}
                    for j, c in enumerate(samples[i])
                ],
            }
        )
    return outcomes, rows


def _generate(backend: SamplingBackend, prompts: list[Prompt], n: int) -> tuple[list[list[str]], list[str]]:
    if hasattr(backend, "sample_and_greedy"):
        samples, greedy = backend.sample_and_greedy(prompts, n)
    else:
        samples, greedy = backend.sample(prompts, n), backend.greedy(prompts)
    if len(samples) != len(prompts) or any(len(s) != n for s in samples) or len(greedy) != len(prompts):
        raise RuntimeError("the sampling backend returned the wrong number of completions")
    return samples, greedy


def measure(
    records: list[MCQRecord],
    dataset_dir: str | Path,
    backend: SamplingBackend,
    harness: HarnessConfig,
    *,
    judge: SamplingBackend | None = None,
    group_of: Callable[[MCQRecord], str] = default_group,
) -> tuple[list[QuestionOutcome], list[dict]]:
    """Ask every multiple-choice question of `records` (images under `dataset_dir`): n sampled answers and the
    greedy one from one prefill, read as the harness says. Returns outcomes and one row per question with every
    completion (samples.jsonl)."""
    if not records:
        return [], []
    samples, greedy = _generate(backend, prompts_for(records, dataset_dir, harness.prompt_format), harness.n_samples)
    return read_answers(records, samples, greedy, judge=judge, judge_mode=harness.judge_mode, group_of=group_of)


def read_open_answers(
    records: list[OpenRecord],
    samples: list[list[str]],
    greedy: list[str],
    *,
    judge: SamplingBackend | None = None,
    group_of: Callable[[OpenRecord], str] = default_group,
) -> tuple[list[QuestionOutcome], list[dict]]:
    """Open-ended answers: correct = normalised exact match with the reference, or, with a judge, the judge's verdict
    on every answer (free text has no unreadable/readable split); token F1 of the greedy answer is kept too."""
    verdicts: list[bool] = []
    if judge is not None:  # one batch for every answer of every question
        verdicts = judge_open(judge, [OpenJudgeItem(rec.question, rec.answer, str(c))
                                      for rec, ss, g in zip(records, samples, greedy, strict=True) for c in [g, *ss]])
    outcomes, rows = [], []
    at = 0
    for rec, ss, g in zip(records, samples, greedy, strict=True):
        pg = read_open_answer(g)
        ps = [read_open_answer(c) for c in ss]
        if judge is not None:
            g_ok, s_ok = verdicts[at], verdicts[at + 1 : at + 1 + len(ss)]
            at += 1 + len(ss)
        else:
            g_ok, s_ok = exact_match(pg.letter, rec.answer), [exact_match(p.letter, rec.answer) for p in ps]
        outcomes.append(
            QuestionOutcome(
                id=rec.id, task=rec.task, group=group_of(rec), answer=rec.answer, n_options=None,
                greedy_letter=pg.letter, greedy_correct=g_ok, sample_letters=[p.letter for p in ps], sample_correct=s_ok,
                greedy_format_ok=pg.format_ok, sample_format_ok=[p.format_ok for p in ps],
                greedy_truncated=is_truncated(g), sample_truncated=[is_truncated(c) for c in ss],
                greedy_f1=token_f1(pg.letter, rec.answer), judged=(1 + len(ss)) if judge is not None else 0,
            )
        )
        rows.append({"id": rec.id, "task": rec.task, "answer": rec.answer, "open": True,
                     "greedy": {"completion": str(g), "text": pg.letter, "correct": g_ok,
                                "f1": token_f1(pg.letter, rec.answer), "truncated": is_truncated(g)},
                     "samples": [{"completion": str(c), "text": p.letter, "correct": ok, "truncated": is_truncated(c)}
                                 for c, p, ok in zip(ss, ps, s_ok)]})
    return outcomes, rows


def measure_open(
    records: list[OpenRecord],
    dataset_dir: str | Path,
    backend: SamplingBackend,
    harness: HarnessConfig,
    *,
    judge: SamplingBackend | None = None,
) -> tuple[list[QuestionOutcome], list[dict]]:
    """Ask every open-ended question of `records` with the same sampling settings as the multiple-choice ones."""
    if not records:
        return [], []
    prompts = [
        Prompt(build_open_messages(r.question, r.image is not None, harness.prompt_format), open_image(dataset_dir, r))
        for r in records
    ]
    samples, greedy = _generate(backend, prompts, harness.n_samples)
    return read_open_answers(records, samples, greedy, judge=judge)


# --------------------------------------------------------------------------------------------------------------
# Summaries (pure)
# --------------------------------------------------------------------------------------------------------------


def _check(outcomes: list[QuestionOutcome], k: int) -> None:
    if not outcomes:
        raise ValueError("no questions to summarise")
    for o in outcomes:
        if len(o.sample_correct) < k:
            raise ValueError(
                f"question {o.id!r}: {len(o.sample_correct)} samples but k={k}; draw n >= k samples per question"
            )


def _rates(outcomes: list[QuestionOutcome]) -> dict[str, float]:
    n_samples = sum(len(o.sample_correct) for o in outcomes)
    return {
        "format_failure_rate": sum(o.sample_format_ok.count(False) for o in outcomes) / n_samples if n_samples else 0.0,
        "greedy_format_failure_rate": mean([0.0 if o.greedy_format_ok else 1.0 for o in outcomes]),
        "truncation_rate": sum(o.sample_truncated.count(True) for o in outcomes) / n_samples if n_samples else 0.0,
        "greedy_truncation_rate": mean([1.0 if o.greedy_truncated else 0.0 for o in outcomes]),
        "judged_rate": sum(o.judged for o in outcomes) / (n_samples + len(outcomes)),
        "mean_distinct_answers": mean([len({x for x in o.sample_letters if x is not None}) for o in outcomes]),
    }


def chance_terms(n_options: int, k: int, ceiling: float) -> tuple[int, float]:
    """(k used, a uniform guesser's pass@k at it) for a question with `n_options` options and K = `k`."""
    if not isinstance(n_options, int) or n_options < 2:
        raise ValueError(f"n_options={n_options!r}: a chance correction needs the option count (at least 2)")
    kq = correction_k(n_options, k, ceiling)
    return kq, chance_pass_at_k(n_options, kq)


def support_summary(
    outcomes: list[QuestionOutcome], k: int, *, ceiling: float = 0.5, n_boot: int = 1000, seed: int = 0
) -> dict:
    """The metrics block M of multiple-choice outcomes: raw Acc@1 / Pass@k curve / gap with intervals, a uniform
    guesser's Acc@1 and curve beside them, and the chance-corrected Acc@1 / Pass@K / gap with intervals (see the
    module docstring). Fractions in [0, 1]; corrected values can be negative (below chance)."""
    _check(outcomes, k)
    for o in outcomes:
        if o.n_options is None or o.n_options < 2:
            raise ValueError(
                f"question {o.id!r} (task {o.task!r}): no option count (n_options={o.n_options!r}); the chance "
                "correction needs each question's number of options"
            )
    curves = [pass_curve(len(o.sample_correct), o.n_correct, k) for o in outcomes]
    acc = [float(o.greedy_correct) for o in outcomes]
    passk = [c[k - 1] for c in curves]
    curve = {str(j + 1): mean([c[j] for c in curves]) for j in range(k)}
    options = Counter(o.n_options for o in outcomes)
    chance_curve = {str(j): sum(cnt * chance_pass_at_k(c, j) for c, cnt in options.items()) / len(outcomes)
                    for j in range(1, k + 1)}
    used = {c: chance_terms(c, k, ceiling) for c in options}
    corr_pass = [
        corrected(pass_at_k(len(o.sample_correct), o.n_correct, used[o.n_options][0]), used[o.n_options][1])
        for o in outcomes
    ]
    corr_acc = [corrected(float(o.greedy_correct), 1.0 / o.n_options) for o in outcomes]
    kw = dict(n_boot=n_boot, seed=seed)
    return {
        "n": len(outcomes),
        "acc_at_1": mean(acc),
        "pass_at_k": curve,
        "gap": curve[str(k)] - mean(acc),
        "ci": joint_ci(acc, passk, **kw),
        "ci_curve": curve_ci(curves, **kw),
        "chance": {
            "acc_at_1": sum(cnt / c for c, cnt in options.items()) / len(outcomes),
            "pass_at_k": chance_curve,
        },
        "corrected": {
            "acc_at_1": mean(corr_acc),
            "pass_at_k": mean(corr_pass),
            "gap": mean(corr_pass) - mean(corr_acc),
            "ci": joint_ci(corr_acc, corr_pass, **kw),
            "ceiling": ceiling,
            "k_used": {str(c): used[c][0] for c in sorted(options)},
            "chance_at_k_used": {str(c): used[c][1] for c in sorted(options)},
        },
        "options": {str(c): options[c] for c in sorted(options)},
        **_rates(outcomes),
    }


def open_summary(outcomes: list[QuestionOutcome], k: int, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Open-ended outcomes: exact-match (or judged) Acc@1 and Pass@k curve, greedy token F1, with intervals."""
    _check(outcomes, k)
    curves = [pass_curve(len(o.sample_correct), o.n_correct, k) for o in outcomes]
    acc = [float(o.greedy_correct) for o in outcomes]
    f1 = [float(o.greedy_f1 or 0.0) for o in outcomes]
    kw = dict(n_boot=n_boot, seed=seed)
    curve = {str(j + 1): mean([c[j] for c in curves]) for j in range(k)}
    return {
        "n": len(outcomes),
        "acc_at_1": mean(acc),
        "pass_at_k": curve,
        "gap": curve[str(k)] - mean(acc),
        "token_f1": mean(f1),
        "ci": {**joint_ci(acc, [c[k - 1] for c in curves], **kw), "token_f1": mean_ci(f1, **kw)},
        **_rates(outcomes),
    }


def question_pass(o: QuestionOutcome, k: int) -> float:
    """Unbiased pass@k of one outcome."""
    return pass_at_k(len(o.sample_correct), o.n_correct, k)


def corrected_pass(o: QuestionOutcome, k: int, ceiling: float = 0.5) -> float:
    """Chance-corrected pass@k_q of one multiple-choice outcome (see the module docstring)."""
    kq, chance = chance_terms(o.n_options, k, ceiling)
    return corrected(question_pass(o, kq), chance)
