"""SFTConfig: every knob of the bridge (SFT) step; SFTIO: its inputs and outputs. Both are the launcher's flags
(components.common.cli). TRL's own `trl.SFTConfig` is built from SFTConfig in train.py."""

from __future__ import annotations

from dataclasses import dataclass, field

from components.common.cli import check_nonempty
from components.common.prompts import check_prompt_format
from components.sft.rationales import RATIONALES


@dataclass
class SFTIO:
    model: str = field(metadata={"help": "base model: HF id, local dir or s3:// URI"})
    sft_set: str = field(metadata={"help": "MCQ dataset dir (records.jsonl + images/) of the SFT pool"})
    diagnosis: str = field(metadata={"help": "diagnose step output dir (holds diagnosis.json)"})
    out: str = field(metadata={"help": "output model directory (written atomically)"})
    teacher_model: str = field(
        default="",
        metadata={"help": "VLM that writes the think/scaffold rationales, given the correct answer (the pipeline "
                          "passes its labeller model); not needed with --prompt-format direct"},
    )
    rationale_cache: str = field(
        default="", metadata={"help": "directory of cached rationales ('' = $MEDBRIDGE_CACHE/sft/rationales)"}
    )
    checkpoint_dir: str = field(
        default="",
        metadata={"help": "where checkpoints go and are resumed from ('' = $MEDBRIDGE_CACHE/checkpoints/sft-<task "
                          "fingerprint>, so a retried task resumes)"},
    )

    def __post_init__(self):
        check_nonempty(self, optional=("teacher_model", "rationale_cache", "checkpoint_dir"))


@dataclass
class SFTConfig:
    prompt_format: str = field(
        default="think",
        metadata={"help": "prompt format of prompts and targets: think | direct | scaffold (use GRPO's format)"},
    )
    max_steps: int = field(default=0, metadata={"help": "optimizer steps; 0 = `epochs` passes over the selected data"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the selected examples when max_steps is 0"})
    learning_rate: float = field(
        default=0.0, metadata={"help": "peak learning rate; 0 = 1e-5 for full weights, 1e-4 for LoRA"}
    )
    per_device_batch_size: int = field(default=4, metadata={"help": "examples per process per micro-batch"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    warmup_ratio: float = field(default=0.03, metadata={"help": "fraction of steps with linear warm-up"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    max_examples: int = field(
        default=20000, metadata={"help": "cap on proximal examples, class-balanced over (task, answer); 0 = no cap"}
    )
    rationales: str = field(
        default="teacher",
        metadata={"help": "think/scaffold targets: teacher (rationales a teacher VLM writes for the correct answer) "
                          "or template (a fixed sentence; only to warm up a random demo model: it degenerates "
                          "GRPO-CARE's consistency bonus)"},
    )
    teacher_max_new_tokens: int = field(default=512, metadata={"help": "longest teacher rationale, in tokens"})
    teacher_batch_size: int = field(default=8, metadata={"help": "questions per teacher generation batch"})
    lora: bool = field(default=False, metadata={"help": "train a LoRA adapter (merged into the saved model)"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    lora_target_modules: str = field(
        default=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
        metadata={"help": "regex of the language-model modules LoRA adapts (tune_vision adds the vision tower's)"},
    )
    tune_vision: bool = field(
        default=False,
        metadata={"help": "also train the vision tower (MedBridgeRL: medical SFT improves perception); off: the ViT "
                          "stays frozen, as the probe step measured it"},
    )
    max_length: int = field(default=2048, metadata={"help": "longest tokenised example (prompt + image tokens + target)"})
    # Speed (TRL refuses packing and padding-free batches for vision data; these are what it allows).
    group_by_length: bool = field(
        default=False,
        metadata={"help": "batch examples of similar length together (transformers' length-grouped sampler over "
                          "each example's token count, images included): less padding per micro-batch"},
    )
    gradient_checkpointing: bool = field(
        default=True,
        metadata={"help": "recompute activations in the backward pass (GPU only; less memory, ~1/3 more compute). "
                          "false trains faster where the micro-batch's activations fit"},
    )
    liger_kernels: bool = field(
        default=False,
        metadata={"help": "Liger's fused Triton kernels for Qwen2.5-VL's RMSNorm, SwiGLU and multimodal RoPE (GPU; "
                          "needs the liger-kernel package). TRL's own fused LM-head loss stays on either way"},
    )
    max_pixels: int = field(default=0, metadata={"help": "image pixels cap of the processor (0 = the checkpoint's own)"})
    save_every_steps: int = field(
        default=200, metadata={"help": "save a resumable checkpoint every N optimizer steps (0 = only on SIGTERM)"}
    )
    keep_checkpoints: bool = field(
        default=False, metadata={"help": "keep the checkpoints after the model is written (default: delete them)"}
    )
    deepspeed: bool = field(default=False, metadata={"help": "DeepSpeed ZeRO-3 (GPUs; needs deepspeed)"})
    offload_optimizer: bool = field(
        default=False,
        metadata={"help": "DeepSpeed: keep the optimizer state in CPU memory (slower; for GPUs that cannot hold "
                          "full-weight training, e.g. 7B on one GPU)"},
    )
    num_processes: int = field(
        default=0, metadata={"help": "training processes; 0 = one per visible GPU (1 on CPU); >1 on CPU = DDP over gloo"}
    )
    seed: int = field(default=0, metadata={"help": "seed for data selection, order and LoRA init"})

    def __post_init__(self):
        check_prompt_format(self.prompt_format)
        for name in ("per_device_batch_size", "gradient_accumulation_steps", "lora_r", "lora_alpha",
                     "max_length", "teacher_max_new_tokens", "teacher_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("max_steps", "max_examples", "max_pixels", "save_every_steps", "num_processes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0 (0 = automatic / no cap / off)")
        if not self.epochs > 0:
            raise ValueError(f"epochs={self.epochs} must be > 0")
        if self.learning_rate < 0:
            raise ValueError(f"learning_rate={self.learning_rate} must be > 0 (or 0 for the default)")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio={self.warmup_ratio} must be in [0, 1)")
        if not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm={self.max_grad_norm} must be > 0")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout={self.lora_dropout} must be in [0, 1)")
        if self.rationales not in RATIONALES:
            raise ValueError(f"rationales={self.rationales!r}; choose one of {', '.join(RATIONALES)}")
        if self.offload_optimizer and not self.deepspeed:
            raise ValueError("offload_optimizer=True needs deepspeed=True (it is a DeepSpeed ZeRO-3 setting)")
        if self.lora and self.deepspeed:
            raise ValueError(
                "lora=True and deepspeed=True conflict: ZeRO-3 shards full-weight training; LoRA adapters train "
                "with one copy of the frozen base per GPU. Set lora: false (full weights under ZeRO-3) or "
                "deepspeed: false (LoRA, DDP)"
            )
