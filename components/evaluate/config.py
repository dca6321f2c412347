"""EvalConfig: every knob of the evaluate step (the measurement harness's settings, shared with the diagnose step,
plus the evaluation's own; recorded whole in the results' lineage); EvalIO: its inputs and outputs. Both are the
launcher's flags (components.common.cli)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from components.common.cli import check_nonempty
from components.common.harness import HarnessConfig
from components.common.privacy import env_private

FINAL_STAGES = ("rl", "sft")


@dataclass
class EvalIO:
    model: str = field(metadata={"help": "the run's final model (GRPO output; the SFT model when the gate stopped RL): directory, hub id or s3:// URI"})
    base_model: str = field(metadata={"help": "base model it was trained from (same forms)"})
    out_results: str = field(metadata={"help": "results directory to write (report.html inside it)"})
    out_report: str = field(metadata={"help": "HTML report file to write (the Kubeflow HTML artifact)"})
    sft_model: str = field(default="", metadata={"help": "the bridge's SFT model, scored too so that SFT and RL gains are kept apart (base -> SFT -> SFT+GRPO)"})
    eval_set: str = field(default="", metadata={"help": "MedMNIST MCQ dataset dir (test split) for the transfer table"})
    diagnosis: str = field(default="", metadata={"help": "diagnosis artifact dir (diagnosis.json, passk_curves.png)"})
    rediagnosis: str = field(default="", metadata={"help": "the re-diagnosis after the bridge (diagnosis.json with the gate)"})
    probe_report: str = field(default="", metadata={"help": "probe artifact dir (probe.json, table.md)"})
    curation_report: str = field(default="", metadata={"help": "curation report dir"})
    benchmarks_root: str = field(
        default="", metadata={"help": "local dir or s3:// URI holding the benchmarks in their public layouts"}
    )

    def __post_init__(self):
        optional = ("sft_model", "eval_set", "diagnosis", "rediagnosis", "probe_report", "curation_report", "benchmarks_root")
        check_nonempty(self, optional=optional)
        for name in ("eval_set", "diagnosis", "rediagnosis", "probe_report", "curation_report"):
            value = getattr(self, name)
            if value and not Path(value).is_dir():
                raise FileNotFoundError(f"--{name.replace('_', '-')} {value}: no such directory")


@dataclass
class EvalConfig(HarnessConfig):
    benchmarks: str = field(
        default="pmc-vqa,mmmu-med,medxpertqa-mm,pathvqa,slake,vqa-rad",
        metadata={"help": "comma-separated benchmark names (components/common/benchmarks/*.yaml: the six, or "
                          "medvlthinker-eval, the paper code's combined set), 'all', or 'none'"},
    )
    train_task: str = field(
        default="pmc-vqa",
        metadata={
            "help": "task the post-training targeted: a benchmark name (pmc-vqa for the RL set) or a MedMNIST flag"
        },
    )
    final_stage: str = field(default="rl", metadata={"help": "what --model is: rl (SFT+GRPO or GRPO) or sft (the gate stopped the run before GRPO)"})
    max_questions: int = field(
        default=200,
        metadata={
            "help": "questions scored per benchmark, a seeded subsample (0 = all; the paper used ~200)"
        },
    )
    overfit_margin: float = field(
        default=0.05,
        metadata={"help": "transfer guard: a transfer change counts as a loss when it lies confidently below minus this (fraction)"},
    )
    alpha: float = field(default=0.05, metadata={"help": "transfer guard: family-wise error rate of Holm's correction over the run's transfer checks"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples for the confidence intervals"})
    # Privacy (components/common/privacy.py).
    private: bool = field(
        default=False,
        metadata={"help": "keep images and question/answer texts out of the report and samples.jsonl, and no copy of "
                          "the benchmark questions in the results (MEDBRIDGE_PRIVATE=1 turns it on)"},
    )

    def __post_init__(self):
        from components.common.benchmark import parse_benchmarks

        super().__post_init__()
        self.private = self.private or env_private()  # the operator's environment can only turn it on
        parse_benchmarks(self.benchmarks)  # raises naming the unknown benchmark
        if not self.train_task or not self.train_task.strip():
            raise ValueError(
                "train_task is empty; pass the task the model was trained on (e.g. 'pmc-vqa' or 'organamnist')"
            )
        if self.final_stage not in FINAL_STAGES:
            raise ValueError(f"final_stage={self.final_stage!r} is not known; choose one of {', '.join(FINAL_STAGES)} (--final-stage)")
        if self.max_questions < 0:
            raise ValueError(f"max_questions={self.max_questions} must be >= 0 (0 scores every question)")
        if not 0 <= self.overfit_margin < 1:
            raise ValueError(
                f"overfit_margin={self.overfit_margin} must be a fraction in [0, 1), e.g. 0.05 for 5 points"
            )
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha={self.alpha} must lie in (0, 1), e.g. 0.05 (--alpha)")
        if self.n_boot < 100:
            raise ValueError(f"n_boot={self.n_boot} is too few resamples for a 95% interval; use >= 100")


@dataclass
class StudyIO:
    out: str = field(metadata={"help": "study directory to write (study.json, transfer_heatmap.png, report.md, report.html)"})
    out_report: str = field(metadata={"help": "HTML report file to write (the Kubeflow HTML artifact)"})
    from_base: list[str] = field(default_factory=list, metadata={"help": "evaluate results directories of the GRPO runs started from the base model"})
    from_bridged: list[str] = field(default_factory=list, metadata={"help": "evaluate results directories of the GRPO runs started from the bridged model"})

    def __post_init__(self):
        check_nonempty(self)
        if not self.from_base and not self.from_bridged:
            raise ValueError("no run to report: pass --from-base and/or --from-bridged results directories")
        for d in [*self.from_base, *self.from_bridged]:
            if not (Path(d) / "results.json").is_file():
                raise FileNotFoundError(f"{d}: no results.json; pass the evaluate step's results directories")


@dataclass
class StudyConfig:
    tasks: str = field(default="", metadata={"help": "the study's GRPO training tasks, comma-separated (empty = those of the runs)"})
    bridged_model: str = field(default="", metadata={"help": "the bridged checkpoint the runs started from (e.g. OctoMed-7B); empty = the bridge step's SFT output"})
