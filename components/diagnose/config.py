"""DiagnoseConfig: every knob of the support diagnosis; DiagnoseIO: its inputs and outputs. Both are the launcher's
flags (components.common.cli)."""

from __future__ import annotations

from dataclasses import dataclass, field

from components.common.cli import check_nonempty
from components.common.privacy import env_private
from components.common.prompts import PROMPT_FORMATS
from components.common.sampling import BACKENDS, SamplingConfig
from components.diagnose.decision import BRANCHES, FORCE_CHOICES


@dataclass
class DiagnoseIO:
    model: str = field(metadata={"help": "checkpoint to diagnose: HF id, local dir or s3:// URI"})
    data: str = field(metadata={"help": "MCQ dataset directory (records.jsonl + images/), e.g. the curate step's diag_set"})
    out: str = field(metadata={"help": "diagnosis output directory (replaced atomically)"})
    probe: str = field(default="", metadata={"help": "probe_report directory (probe.json) to copy perception-limited tasks from; empty = none"})
    metrics_json: str = field(default="", metadata={"help": "also write the flat metrics JSON here (for kfp Metrics)"})
    branch_file: str = field(default="", metadata={"help": "also write the chosen branch to this file"})

    def __post_init__(self):
        check_nonempty(self, optional=("probe", "metrics_json", "branch_file"))


@dataclass
class DiagnoseConfig:
    k: int = field(default=16, metadata={"help": "K of Pass@K; the curve is reported for every k = 1..K"})
    n_samples: int = field(default=0, metadata={"help": "samples drawn per question (n >= k; 0 = k). More than k lowers the variance of pass@k"})
    tau: float = field(default=0.5, metadata={"help": "reliability threshold on Pass@K (fraction): below -> bridge, at or above -> sharpen"})
    prompt_format: str = field(default="think", metadata={"help": f"prompt format: {', '.join(PROMPT_FORMATS)}"})
    max_new_tokens: int = field(default=256, metadata={"help": "longest completion, in tokens"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature for the K samples (the paper's code: 0.7)"})
    top_p: float = field(default=0.9, metadata={"help": "nucleus sampling top-p (the paper's code: 0.9)"})
    backend: str = field(default="transformers", metadata={"help": f"sampling backend: {', '.join(BACKENDS)}"})
    batch_size: int = field(default=8, metadata={"help": "transformers: prompts per prefill batch (each decodes n+1 rows); 64 suits an H100/H200 with a 7B model"})
    tensor_parallel_size: int = field(default=1, metadata={"help": "vllm: GPUs per model replica"})
    gpu_memory_utilization: float = field(default=0.9, metadata={"help": "vllm: fraction of GPU memory the engine may take"})
    device: str = field(default="auto", metadata={"help": "transformers: auto, cpu, cuda, cuda:N"})
    force_branch: str = field(default="auto", metadata={"help": "auto (the rule decides) or an operator override: bridge / sharpen, recorded as forced"})
    ambiguous: str = field(default="bridge", metadata={"help": "branch when the Pass@K interval straddles tau (bridge = conservative)"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples for the 95% intervals"})
    judge_model: str = field(default="", metadata={"help": "LLM judge for unreadable answers (e.g. Qwen/Qwen2.5-VL-32B-Instruct); empty = off"})
    max_questions: int = field(default=0, metadata={"help": "diagnose only the first N questions (0 = all); for smoke runs"})
    seed: int = field(default=0, metadata={"help": "seed for sampling and the bootstrap"})
    # Privacy (components/common/privacy.py).
    private: bool = field(default=False, metadata={"help": "keep question/answer texts and completions out of samples.jsonl (MEDBRIDGE_PRIVATE=1 turns it on)"})

    def __post_init__(self):
        self.private = self.private or env_private()  # the operator's environment can only turn it on
        if self.k < 1:
            raise ValueError(f"k={self.k} must be >= 1 (--k)")
        if self.n_samples == 0:
            self.n_samples = self.k
        if self.n_samples < self.k:
            raise ValueError(f"n_samples={self.n_samples} is below k={self.k}: pass@k needs n >= k samples (--n-samples)")
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"tau={self.tau} must lie in [0, 1]: it is a Pass@K fraction, e.g. 0.5 (--tau)")
        if self.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format={self.prompt_format!r} is not known; choose one of {', '.join(PROMPT_FORMATS)} (--prompt-format)")
        if self.force_branch not in FORCE_CHOICES:
            raise ValueError(f"force_branch={self.force_branch!r} is not known; choose one of {', '.join(FORCE_CHOICES)} (--force-branch)")
        if self.ambiguous not in BRANCHES:
            raise ValueError(f"ambiguous={self.ambiguous!r} is not known; choose one of {', '.join(BRANCHES)} (--ambiguous)")
        if self.n_boot < 100:
            raise ValueError(f"n_boot={self.n_boot} is too few for a 95% interval; use >= 100, e.g. 1000 (--n-boot)")
        if self.max_questions < 0:
            raise ValueError(f"max_questions={self.max_questions} must be >= 0 (--max-questions)")
        self.sampling()  # validates temperature, top_p, max_new_tokens, batch_size, backend

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
            )
        except ValueError as e:
            raise ValueError(f"{e} (--{str(e).split('=')[0].replace('_', '-')})") from None
