"""SharpenConfig: every knob of the sharpen (GRPO) step (named so it never shadows TRL's `GRPOConfig`); SharpenIO:
its inputs and outputs. Both are the launcher's flags (components.common.cli)."""

from __future__ import annotations

from dataclasses import dataclass, field

from components.common.cli import check_nonempty
from components.common.prompts import check_prompt_format
from components.grpo.rollout import check_rollout


@dataclass
class SharpenIO:
    model: str = field(metadata={"help": "base model: HF id, local dir or s3:// URI"})
    rl_set: str = field(metadata={"help": "MCQ dataset dir of RL questions (balanced PMC-VQA)"})
    watch_set: str = field(metadata={"help": "MCQ dataset dir watched for support collapse (diag_set)"})
    diagnosis: str = field(metadata={"help": "diagnose step output dir (holds diagnosis.json)"})
    out: str = field(metadata={"help": "output model directory (written atomically)"})
    init_model: str = field(default="", metadata={"help": "model dir to train instead of --model (the bridge's SFT output)"})
    checkpoint_dir: str = field(
        default="",
        metadata={"help": "where checkpoints go and are resumed from ('' = $MEDBRIDGE_CACHE/checkpoints/grpo-<task "
                          "fingerprint>, so a retried task resumes)"},
    )

    def __post_init__(self):
        check_nonempty(self, optional=("init_model", "checkpoint_dir"))


@dataclass
class SharpenConfig:
    prompt_format: str = field(
        default="think", metadata={"help": "prompt format: think | direct | scaffold (the format reward follows it)"}
    )
    max_steps: int = field(
        default=0, metadata={"help": "optimizer steps; 0 = `epochs` passes over rl_set (from its size, the processes "
                                     "and prompts_per_step x gradient_accumulation_steps)"}
    )
    epochs: float = field(default=1.0, metadata={"help": "passes over rl_set when max_steps is 0 (GRPO-CARE: one)"})
    learning_rate: float = field(
        default=0.0, metadata={"help": "learning rate; 0 = 5e-7 for full weights (GRPO-CARE public run), 1e-5 for LoRA"}
    )
    num_generations: int = field(default=8, metadata={"help": "completions per prompt (the GRPO group size)"})
    prompts_per_step: int = field(
        default=1, metadata={"help": "prompts per process per micro-batch; batch = prompts_per_step x num_generations"}
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    max_new_tokens: int = field(default=256, metadata={"help": "longest sampled completion during training"})
    rollout: str = field(
        default="shared_prefix",
        metadata={"help": "rollout engine: shared_prefix (the project's sampler through TRL's rollout_func: one "
                          "prefill per prompt, its group decoded together, CUDA graphs on GPU), trl (TRL's own "
                          "model.generate), vllm (TRL's vLLM colocate mode; needs vLLM in the image)"},
    )
    rollout_max_rows: int = field(
        default=512, metadata={"help": "shared_prefix: most rows (prompts x num_generations) decoded together"}
    )
    steps_per_generation: int = field(
        default=0,
        metadata={"help": "optimizer micro-steps served by one rollout batch (TRL's steps_per_generation; 0 = "
                          "gradient_accumulation_steps: one on-policy rollout per optimizer step). Larger values "
                          "reuse a rollout over several optimizer steps (TRL then corrects with old log-probs)"},
    )
    vllm_gpu_memory_utilization: float = field(
        default=0.3, metadata={"help": "rollout=vllm: fraction of each GPU's memory vLLM may take beside training"}
    )
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature for the GRPO rollouts"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus top-p for the GRPO rollouts"})
    max_pixels: int = field(default=0, metadata={"help": "image pixels cap of the processor (0 = the checkpoint's own)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm (GRPO-CARE public run: 5)"})
    beta: float = field(default=0.0, metadata={"help": "KL coefficient against the reference (GRPO-CARE: 0)"})
    lora: bool = field(default=False, metadata={"help": "train a LoRA adapter (merged into the saved model)"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha"})
    lora_target_modules: str = field(
        default=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
        metadata={"help": "regex of modules LoRA adapts (default: the language model's projections, not the ViT)"},
    )
    consistency_bonus: float = field(
        default=0.5, metadata={"help": "GRPO-CARE consistency bonus; 0 turns CARE off (plain GRPO)"}
    )
    confidence_upper_bound: float = field(default=0.95, metadata={"help": "GRPO-CARE: clip reference confidences here"})
    consistency_margin: float = field(default=0.01, metadata={"help": "GRPO-CARE: slack below the mean confidence"})
    ema_decay: float = field(default=0.995, metadata={"help": "EMA decay of the reference model"})
    ema_every: int = field(default=10, metadata={"help": "refresh the EMA reference every N optimizer steps"})
    format_weight: float = field(default=1.0, metadata={"help": "weight of the format reward (accuracy has 1.0)"})
    max_prompts: int = field(default=0, metadata={"help": "use at most this many rl_set questions (0 = all)"})
    k: int = field(default=16, metadata={"help": "K of the Pass@K support watch (K samples per watched question)"})
    watch_size: int = field(default=32, metadata={"help": "questions of watch_set measured by the support guard"})
    watch_max_new_tokens: int = field(default=256, metadata={"help": "longest completion when measuring support"})
    watch_every_steps: int = field(
        default=0,
        metadata={"help": "measure support AND save a checkpoint every N optimizer steps (0 = measure only before "
                          "and after; checkpoints then only on SIGTERM)"},
    )
    collapse_tolerance: float = field(
        default=0.05,
        metadata={"help": "support collapses when the upper end of the chance-corrected Pass@K interval falls below "
                          "its starting value minus this"},
    )
    stop_on_collapse: bool = field(
        default=True,
        metadata={"help": "on collapse, stop training and ship the best checkpoint before it (false: only record it)"},
    )
    keep_checkpoints: bool = field(
        default=False, metadata={"help": "keep the checkpoints after the model is written (default: delete them)"}
    )
    deepspeed: bool = field(default=False, metadata={"help": "DeepSpeed ZeRO-3 (GPUs; needs deepspeed)"})
    gradient_checkpointing: bool = field(
        default=True,
        metadata={"help": "recompute activations in the backward pass (GPU only; less memory, ~1/3 more compute). "
                          "false trains faster where a micro-batch's activations fit (LoRA on one GPU)"},
    )
    liger_kernels: bool = field(
        default=False,
        metadata={"help": "Liger's fused Triton kernels for Qwen2.5-VL's RMSNorm, SwiGLU and multimodal RoPE in the "
                          "policy (training forward/backward, rollout, CARE scoring, support watch; CUDA only, needs "
                          "the liger-kernel package). TRL's own fused LM head stays on either way"},
    )
    shared_prompt_forward: bool = field(
        default=True,
        metadata={"help": "compute each group's prompt (and image) once in the policy's forward and backward instead "
                          "of once per completion (components.grpo.prompt_once); applies when gradient_checkpointing "
                          "and deepspeed are off, TRL's forward otherwise"},
    )
    offload_optimizer: bool = field(
        default=False,
        metadata={"help": "DeepSpeed: keep the optimizer state in CPU memory (slower; for GPUs that cannot hold "
                          "full-weight training, e.g. 7B on one GPU)"},
    )
    num_processes: int = field(
        default=0, metadata={"help": "training processes; 0 = one per visible GPU (1 on CPU); >1 on CPU = DDP over gloo"}
    )
    seed: int = field(default=0, metadata={"help": "seed for data order, sampling and LoRA init"})

    def __post_init__(self):
        check_prompt_format(self.prompt_format)
        check_rollout(self.rollout)
        for name in ("num_generations", "rollout_max_rows", "prompts_per_step", "gradient_accumulation_steps",
                     "max_new_tokens", "k", "watch_size", "watch_max_new_tokens", "lora_r", "lora_alpha"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("max_steps", "max_prompts", "steps_per_generation", "watch_every_steps", "max_pixels", "num_processes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0 (0 = automatic / off)")
        if not self.epochs > 0:
            raise ValueError(f"epochs={self.epochs} must be > 0")
        if self.num_generations < 2:
            raise ValueError(
                f"num_generations={self.num_generations}: GRPO needs >= 2 completions per prompt to form a group"
            )
        if self.learning_rate < 0:
            raise ValueError(f"learning_rate={self.learning_rate} must be > 0 (or 0 for the default)")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be > 0 (GRPO samples its rollouts)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]")
        if not 0 < self.vllm_gpu_memory_utilization <= 1:
            raise ValueError(f"vllm_gpu_memory_utilization={self.vllm_gpu_memory_utilization} must be in (0, 1]")
        if not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm={self.max_grad_norm} must be > 0")
        if self.beta < 0:
            raise ValueError(f"beta={self.beta} must be >= 0 (GRPO-CARE uses 0)")
        if self.consistency_bonus < 0:
            raise ValueError(f"consistency_bonus={self.consistency_bonus} must be >= 0 (0 disables GRPO-CARE)")
        if not 0 < self.confidence_upper_bound <= 1:
            raise ValueError(f"confidence_upper_bound={self.confidence_upper_bound} must be in (0, 1]")
        if self.consistency_margin < 0:
            raise ValueError(f"consistency_margin={self.consistency_margin} must be >= 0")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay={self.ema_decay} must be in [0, 1) (GRPO-CARE: 0.995)")
        if self.ema_every < 1:
            raise ValueError(f"ema_every={self.ema_every} must be >= 1 optimizer steps")
        if not 0 <= self.collapse_tolerance <= 1:
            raise ValueError(
                f"collapse_tolerance={self.collapse_tolerance} must be a fraction in [0, 1] (a drop on the "
                "chance-corrected Pass@K scale)"
            )
        if self.offload_optimizer and not self.deepspeed:
            raise ValueError("offload_optimizer=True needs deepspeed=True (it is a DeepSpeed ZeRO-3 setting)")
        if self.lora and self.deepspeed:
            raise ValueError(
                "lora=True and deepspeed=True conflict"
                + (" (with GRPO-CARE, consistency_bonus > 0, the EMA reference cannot copy sharded adapters)"
                   if self.consistency_bonus > 0 else "")
                + ": ZeRO-3 shards full-weight training; LoRA adapters train with one copy of the frozen base per "
                "GPU. Set lora: false (full weights under ZeRO-3, the paper's run) or deepspeed: false (LoRA, DDP)"
            )
