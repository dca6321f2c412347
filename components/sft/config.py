"""SFTConfig: every knob of the bridge (SFT) step; SFTIO: its inputs and outputs. Both are the launcher's flags
(components.common.cli). TRL's own `trl.SFTConfig` is built from SFTConfig in train.py."""

from __future__ import annotations

from dataclasses import dataclass, field

from components.common.cli import check_nonempty
from components.common.prompts import check_prompt_format


@dataclass
class SFTIO:
    model: str = field(metadata={"help": "base model: HF id, local dir or s3:// URI"})
    sft_set: str = field(metadata={"help": "MCQ dataset dir (records.jsonl + images/) of the SFT pool"})
    diagnosis: str = field(metadata={"help": "diagnose step output dir (holds diagnosis.json)"})
    out: str = field(metadata={"help": "output model directory (written atomically)"})

    def __post_init__(self):
        check_nonempty(self)


@dataclass
class SFTConfig:
    prompt_format: str = field(default="think", metadata={"help": "prompt format of the targets: think | direct | scaffold"})
    max_steps: int = field(default=500, metadata={"help": "optimizer steps"})
    learning_rate: float = field(default=1e-5, metadata={"help": "peak learning rate (LoRA usually wants ~1e-4)"})
    per_device_batch_size: int = field(default=4, metadata={"help": "examples per device per micro-batch"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    warmup_ratio: float = field(default=0.03, metadata={"help": "fraction of steps with linear warm-up"})
    max_examples: int = field(
        default=20000, metadata={"help": "cap on proximal examples, class-balanced over (task, answer); 0 = no cap"}
    )
    lora: bool = field(default=False, metadata={"help": "train a LoRA adapter (merged into the saved model)"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    lora_target_modules: str = field(
        default=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
        metadata={"help": "regex of modules LoRA adapts (default: the language model's projections, not the ViT)"},
    )
    max_length: int = field(default=2048, metadata={"help": "longest tokenised example (prompt + image tokens + target)"})
    deepspeed: bool = field(default=False, metadata={"help": "DeepSpeed ZeRO-3 (GPU clusters; needs deepspeed)"})
    seed: int = field(default=0, metadata={"help": "seed for data selection, order and LoRA init"})

    def __post_init__(self):
        check_prompt_format(self.prompt_format)
        for name in ("max_steps", "per_device_batch_size", "gradient_accumulation_steps", "lora_r", "lora_alpha",
                     "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate={self.learning_rate} must be > 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio={self.warmup_ratio} must be in [0, 1)")
        if self.max_examples < 0:
            raise ValueError(f"max_examples={self.max_examples} must be >= 0 (0 = use every proximal example)")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout={self.lora_dropout} must be in [0, 1)")
