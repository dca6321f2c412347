"""EvalConfig: every knob of the evaluate step (recorded whole in the results' lineage); EvalIO: its inputs and
outputs. Both are the launcher's flags (components.common.cli)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from components.common.cli import check_nonempty
from components.common.privacy import env_private
from components.common.prompts import PROMPT_FORMATS
from components.common.sampling import BACKENDS


@dataclass
class EvalIO:
    model: str = field(metadata={"help": "trained model: directory, hub id or s3:// URI"})
    base_model: str = field(metadata={"help": "base model it was trained from (same forms)"})
    out_results: str = field(metadata={"help": "results directory to write (report.html inside it)"})
    out_report: str = field(metadata={"help": "HTML report file to write (the Kubeflow HTML artifact)"})
    eval_set: str = field(default="", metadata={"help": "MedMNIST MCQ dataset dir (test split) for the transfer table"})
    diagnosis: str = field(default="", metadata={"help": "diagnosis artifact dir (diagnosis.json, passk_curves.png)"})
    probe_report: str = field(default="", metadata={"help": "probe artifact dir (probe.json, table.md)"})
    curation_report: str = field(default="", metadata={"help": "curation report dir"})
    benchmarks_root: str = field(
        default="", metadata={"help": "local dir or s3:// URI holding the benchmarks in their public layouts"}
    )

    def __post_init__(self):
        check_nonempty(self, optional=("eval_set", "diagnosis", "probe_report", "curation_report", "benchmarks_root"))
        for name in ("eval_set", "diagnosis", "probe_report", "curation_report"):
            value = getattr(self, name)
            if value and not Path(value).is_dir():
                raise FileNotFoundError(f"--{name.replace('_', '-')} {value}: no such directory")


@dataclass
class EvalConfig:
    benchmarks: str = field(
        default="pmc-vqa,mmmu-med,medxpertqa-mm,pathvqa,slake,vqa-rad",
        metadata={"help": "comma-separated benchmark names (components/evaluate/benchmarks/*.yaml), 'all', or 'none'"},
    )
    train_task: str = field(
        default="pmc-vqa",
        metadata={
            "help": "task the post-training targeted: a benchmark name (pmc-vqa for the RL set) or a MedMNIST flag"
        },
    )
    k: int = field(default=16, metadata={"help": "samples per question for Pass@K (n = K, the unbiased estimator)"})
    prompt_format: str = field(default="think", metadata={"help": f"prompt format: {', '.join(PROMPT_FORMATS)}"})
    max_new_tokens: int = field(default=256, metadata={"help": "longest completion, greedy and sampled"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature for the K samples"})
    top_p: float = field(default=0.9, metadata={"help": "nucleus top-p for the K samples"})
    backend: str = field(default="transformers", metadata={"help": f"sampling backend: {', '.join(BACKENDS)}"})
    batch_size: int = field(default=8, metadata={"help": "prompts per generation batch"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N"})
    max_questions: int = field(
        default=200,
        metadata={
            "help": "closed-form questions scored per benchmark, a seeded subsample (0 = all; the paper used ~200)"
        },
    )
    overfit_margin: float = field(
        default=0.05,
        metadata={
            "help": "delta (fraction) above which a benchmark counts as won and below minus which transfer counts as lost"
        },
    )
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples for the confidence intervals"})
    seed: int = field(default=0, metadata={"help": "seed for subsampling, sampling and the bootstrap"})
    # Privacy (components/common/privacy.py).
    private: bool = field(
        default=False,
        metadata={"help": "keep images and question/answer texts out of the report and samples.jsonl, and no copy of "
                          "the benchmark questions in the results (MEDBRIDGE_PRIVATE=1 turns it on)"},
    )

    def __post_init__(self):
        from components.evaluate.benchmark import parse_benchmarks

        self.private = self.private or env_private()  # the operator's environment can only turn it on

        parse_benchmarks(self.benchmarks)  # raises naming the unknown benchmark
        if not self.train_task or not self.train_task.strip():
            raise ValueError(
                "train_task is empty; pass the task the model was trained on (e.g. 'pmc-vqa' or 'organamnist')"
            )
        if self.k < 1:
            raise ValueError(f"k={self.k} must be >= 1 (samples per question for Pass@K)")
        if self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(
                f"prompt_format={self.prompt_format!r} is not known; choose one of {', '.join(PROMPT_FORMATS)}"
            )
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} must be >= 1")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be > 0 (Acc@1 uses greedy decoding regardless)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r} is not known; choose one of {', '.join(BACKENDS)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1")
        if self.max_questions < 0:
            raise ValueError(f"max_questions={self.max_questions} must be >= 0 (0 scores every closed-form question)")
        if not 0 <= self.overfit_margin < 1:
            raise ValueError(
                f"overfit_margin={self.overfit_margin} must be a fraction in [0, 1), e.g. 0.05 for 5 points"
            )
        if self.n_boot < 100:
            raise ValueError(f"n_boot={self.n_boot} is too few resamples for a 95% interval; use >= 100")
