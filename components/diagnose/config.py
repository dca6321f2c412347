"""DiagnoseConfig: every knob of the support diagnosis (the measurement harness's settings, shared with the evaluate
step, plus the decision's); DiagnoseIO: its inputs and outputs. Both are the launcher's flags
(components.common.cli)."""

from __future__ import annotations

from dataclasses import dataclass, field

from components.common.cli import check_nonempty
from components.common.harness import HarnessConfig
from components.common.privacy import env_private
from components.diagnose.decision import BRANCHES, FORCE_CHOICES


@dataclass
class DiagnoseIO:
    model: str = field(metadata={"help": "checkpoint to diagnose: HF id, local dir or s3:// URI"})
    data: str = field(metadata={"help": "MCQ dataset directory (records.jsonl + images/), e.g. the curate step's diag_set (MedMNIST: breadth)"})
    out: str = field(metadata={"help": "diagnosis output directory (replaced atomically)"})
    target_data: str = field(default="", metadata={"help": "held-out slice of the distribution RL trains on (the curate step's rl_diag_set); when given, the branch is decided on it, per its modality groups, and --data is shown as breadth"})
    probe: str = field(default="", metadata={"help": "probe_report directory (probe.json) to copy perception-limited tasks from; empty = none"})
    metrics_json: str = field(default="", metadata={"help": "also write the flat metrics JSON here (for kfp Metrics)"})
    branch_file: str = field(default="", metadata={"help": "also write the chosen branch (or, with --after-bridge, proceed / stop) to this file"})

    def __post_init__(self):
        check_nonempty(self, optional=("target_data", "probe", "metrics_json", "branch_file"))


@dataclass
class DiagnoseConfig(HarnessConfig):
    tau: float = field(default=0.5, metadata={"help": "reliability threshold on the chance-corrected Pass@K (fraction): interval below -> bridge, at or above -> sharpen"})
    force_branch: str = field(default="auto", metadata={"help": "auto (the rule decides) or an operator override: bridge / sharpen, recorded as forced"})
    ambiguous: str = field(default="bridge", metadata={"help": "branch when the corrected Pass@K interval straddles tau (bridge = conservative)"})
    after_bridge: bool = field(default=False, metadata={"help": "re-diagnosis of a bridged (SFT) model: the output is the gate, proceed (run GRPO) or stop"})
    force_rl: bool = field(default=False, metadata={"help": "with --after-bridge: run GRPO even when the re-diagnosis says stop; recorded as forced"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples for the 95% intervals"})
    max_questions: int = field(default=0, metadata={"help": "diagnose only the first N questions of each set (0 = all); for smoke runs"})
    # Privacy (components/common/privacy.py).
    private: bool = field(default=False, metadata={"help": "keep question/answer texts and completions out of samples.jsonl (MEDBRIDGE_PRIVATE=1 turns it on)"})

    def __post_init__(self):
        super().__post_init__()
        self.private = self.private or env_private()  # the operator's environment can only turn it on
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"tau={self.tau} must lie in [0, 1]: it is a corrected Pass@K fraction, e.g. 0.5 (--tau)")
        if self.force_branch not in FORCE_CHOICES:
            raise ValueError(f"force_branch={self.force_branch!r} is not known; choose one of {', '.join(FORCE_CHOICES)} (--force-branch)")
        if self.ambiguous not in BRANCHES:
            raise ValueError(f"ambiguous={self.ambiguous!r} is not known; choose one of {', '.join(BRANCHES)} (--ambiguous)")
        if self.force_rl and not self.after_bridge:
            raise ValueError("force_rl=true applies to the re-diagnosis after the bridge only (add --after-bridge)")
        if self.n_boot < 100:
            raise ValueError(f"n_boot={self.n_boot} is too few for a 95% interval; use >= 100, e.g. 1000 (--n-boot)")
        if self.max_questions < 0:
            raise ValueError(f"max_questions={self.max_questions} must be >= 0 (--max-questions)")
