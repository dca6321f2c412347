"""DeepSpeed ZeRO-3 configuration for the SFT and GRPO steps (7B models on several GPUs).

    from components.common.deepspeed import zero3_config
    GRPOConfig(..., deepspeed=zero3_config())          # transformers/TRL accept the dict directly

"auto" values are filled in by transformers' DeepSpeed integration from the trainer arguments (batch size,
learning rate, precision), so the one dict serves every step. Launch with `accelerate launch` or `torchrun`, one
process per GPU; the `deepspeed` package must be installed (the `distributed` extra, present in the train image).
"""

from __future__ import annotations

from typing import Any


def zero3_config(
    *,
    offload_optimizer: bool = False,
    offload_params: bool = False,
    bf16: bool = True,
    gather_16bit_weights_on_save: bool = True,
) -> dict[str, Any]:
    """ZeRO stage 3: parameters, gradients and optimizer state sharded over the GPUs.

    offload_optimizer / offload_params move optimizer state / parameters to CPU memory (slower; for small GPUs).
    gather_16bit_weights_on_save makes `save_pretrained` write whole weights rather than shards, so the saved
    directory is an ordinary Hugging Face model dir.
    """

    def offload(enabled: bool) -> dict[str, Any]:
        return {"device": "cpu", "pin_memory": True} if enabled else {"device": "none"}

    extra: dict[str, Any] = {}
    if offload_optimizer:
        # The trainer's own torch AdamW then steps the CPU copy (DeepSpeed's fused CPU Adam would need a compiled op).
        extra["zero_force_ds_cpu_optimizer"] = False
    return {
        **extra,
        "bf16": {"enabled": "auto" if bf16 else False},
        "fp16": {"enabled": False},
        "zero_optimization": {
            "stage": 3,
            "offload_optimizer": offload(offload_optimizer),
            "offload_param": offload(offload_params),
            "overlap_comm": True,
            "contiguous_gradients": True,
            "reduce_bucket_size": "auto",
            "stage3_prefetch_bucket_size": "auto",
            "stage3_param_persistence_threshold": "auto",
            "stage3_max_live_parameters": 1_000_000_000,
            "stage3_max_reuse_distance": 1_000_000_000,
            "stage3_gather_16bit_weights_on_model_save": gather_16bit_weights_on_save,
        },
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "steps_per_print": 100,
        "wall_clock_breakdown": False,
    }
