"""What the SFT (bridge) and GRPO (sharpen) steps share: TRL runtime settings, LoRA, and saving a model artifact.

    args = trl.SFTConfig(output_dir=..., max_steps=..., **runtime_args(on_cuda, deepspeed=False, seed=0))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def runtime_args(on_cuda: bool, *, deepspeed: bool, seed: int) -> dict[str, Any]:
    """TrainingArguments both trainers use: bf16 + gradient checkpointing on GPU (fp32 without on CPU, where both
    only cost time), optional DeepSpeed ZeRO-3, a log line per step, no intermediate checkpoints, seeded."""
    ds = None
    if deepspeed:
        from components.common.deepspeed import zero3_config

        ds = zero3_config()
    return dict(
        bf16=on_cuda,
        gradient_checkpointing=on_cuda,
        use_cpu=not on_cuda,
        deepspeed=ds,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
    )


def lora_config(r: int, alpha: int, dropout: float, target_modules: str):
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, task_type="CAUSAL_LM")


def save_model_dir(model, processor, out: Path) -> None:
    """A full HF model dir (weights, tokenizer, image processor, chat template) that
    components.common.modeling.load_model_and_processor opens."""
    model.save_pretrained(out)
    processor.tokenizer.save_pretrained(out)
    processor.image_processor.save_pretrained(out)
    (out / "chat_template.json").write_text(json.dumps({"chat_template": processor.tokenizer.chat_template}, indent=2))


def snapshot_params(model) -> dict:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters()}


def changed_fraction(before: dict, model) -> float:
    """Fraction of parameter tensors that differ from `before` (names of a merged PEFT model mapped back)."""
    changed = total = 0
    for name, p in model.named_parameters():
        name = name.replace("base_model.model.", "").replace(".base_layer", "")
        if name in before:
            total += 1
            changed += int(not bool((before[name] == p.detach().cpu()).all()))
    return changed / total if total else 0.0
