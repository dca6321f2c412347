"""What the SFT (bridge) and GRPO (sharpen) steps share: TRL runtime settings, LoRA, the learning rate and step count
rules, saving a model artifact from one or many processes (DDP or DeepSpeed ZeRO-3), and small collectives.

    args = trl.SFTConfig(output_dir=..., max_steps=..., **runtime_args(on_cuda, deepspeed=False, seed=0))

Under DeepSpeed ZeRO-3 every rank holds a shard of each weight: whatever needs whole weights (the saved artifact, the
EMA reference in a checkpoint, a digest of the parameters) gathers them with `deepspeed.zero.GatheredParameters`,
on every rank at once, and only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Learning rates when a recipe leaves `learning_rate: 0` (auto): full weights vs LoRA adapters, which need a larger
# step to move the same distance (adapters start at zero and are low-rank).
AUTO_LEARNING_RATES = {
    "sft": {"full": 1e-5, "lora": 1e-4},
    "grpo": {"full": 5e-7, "lora": 1e-5},  # full: the public GRPO-CARE run
}


def effective_learning_rate(step: str, learning_rate: float, lora: bool) -> float:
    """`learning_rate` when set (> 0), else the step's default for full weights or LoRA (AUTO_LEARNING_RATES)."""
    if learning_rate > 0:
        return learning_rate
    return AUTO_LEARNING_RATES[step]["lora" if lora else "full"]


def steps_for_epochs(n_items: int, items_per_step: int, epochs: float, *, drop_last: bool) -> int:
    """Optimizer steps that cover `epochs` passes over `n_items` at `items_per_step` items per step (at least 1).

    drop_last: a last, partial batch is not a step (TRL's GRPO sampler drops it; the SFT data loader keeps it)."""
    if n_items < 1 or items_per_step < 1:
        raise ValueError(f"cannot plan steps for {n_items} item(s) at {items_per_step} per step")
    per_epoch = n_items // items_per_step if drop_last else math.ceil(n_items / items_per_step)
    return max(1, math.ceil(max(per_epoch, 1) * epochs))


def runtime_args(
    on_cuda: bool,
    *,
    deepspeed: bool,
    seed: int,
    save_steps: int = 0,
    max_grad_norm: float = 1.0,
    offload_optimizer: bool = False,
    gradient_checkpointing: bool = True,
) -> dict[str, Any]:
    """TrainingArguments both trainers use: bf16 + gradient checkpointing on GPU (fp32 without on CPU, where both
    only cost time; `gradient_checkpointing=False` turns recomputation off on GPU too), optional DeepSpeed ZeRO-3
    (optimizer state in CPU memory with `offload_optimizer`), a log line per step, a checkpoint every `save_steps`
    optimizer steps (0 = only when asked, e.g. on SIGTERM; MedBridge decides which to keep), seeded."""
    ds = None
    if deepspeed:
        from components.common.deepspeed import zero3_config

        ds = zero3_config(offload_optimizer=offload_optimizer)
    return dict(
        bf16=on_cuda,
        gradient_checkpointing=on_cuda and gradient_checkpointing,
        use_cpu=not on_cuda,
        deepspeed=ds,
        logging_steps=1,
        save_strategy="steps" if save_steps > 0 else "no",
        save_steps=save_steps if save_steps > 0 else 500,
        save_total_limit=None,
        max_grad_norm=max_grad_norm,
        report_to=[],
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
    )


def lora_config(r: int, alpha: int, dropout: float, target_modules: str):
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, task_type="CAUSAL_LM")


# Regex of the vision tower's trainable projections in Qwen2.5-VL (attention, MLP, and the patch merger).
VISION_LORA_TARGETS = r".*visual.*\.(qkv|attn\.proj|gate_proj|up_proj|down_proj|mlp\.0|mlp\.2)"


def lora_targets(language_targets: str, tune_vision: bool) -> str:
    """The LoRA target regex: the language model's projections, plus the vision tower's when `tune_vision`."""
    return f"({language_targets})|({VISION_LORA_TARGETS})" if tune_vision else language_targets


def freeze_vision(model) -> int:
    """Stop gradients into the vision tower (and its merger); returns the number of frozen tensors."""
    n = 0
    for name, p in model.named_parameters():
        if ".visual." in f".{name}" or name.startswith("visual."):
            p.requires_grad_(False)
            n += 1
    return n


def save_model_dir(model, processor, out: Path, state_dict: dict | None = None) -> None:
    """A full HF model dir (weights, tokenizer, image processor, chat template) that
    components.common.modeling.load_model_and_processor opens. `state_dict`: whole weights gathered from ZeRO-3."""
    model.save_pretrained(out, state_dict=state_dict)
    processor.tokenizer.save_pretrained(out)
    processor.image_processor.save_pretrained(out)
    (out / "chat_template.json").write_text(json.dumps({"chat_template": processor.tokenizer.chat_template}, indent=2))


# --- processes --------------------------------------------------------------------------------------------------


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def world_size() -> int:
    dist = _dist()
    return dist.get_world_size() if dist else 1


def process_rank() -> int:
    dist = _dist()
    return dist.get_rank() if dist else 0


def is_main_process() -> bool:
    dist = _dist()
    return dist is None or dist.get_rank() == 0


def barrier() -> None:
    dist = _dist()
    if dist and dist.get_world_size() > 1:
        dist.barrier()


def _collective_device():
    import torch

    dist = _dist()
    if dist and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def any_process(flag: bool) -> bool:
    """True on every process when it is true on any (e.g. a SIGTERM that reached one rank first)."""
    import torch

    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return flag
    t = torch.tensor([1 if flag else 0], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_objects(obj: Any) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every process."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every process."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def gathered(params: list) -> Iterator[None]:
    """Whole weights inside the block for ZeRO-3-partitioned `params` (a no-op for ordinary tensors)."""
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        with deepspeed.zero.GatheredParameters(params):
            yield
    else:
        yield


@contextlib.contextmanager
def gathered_for_update(params: list) -> Iterator[None]:
    """Whole weights that rank 0 may change inside the block; partitioned again from rank 0's values after it."""
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
            yield
    else:
        yield


def save_module_weights(module, path: str | Path) -> None:
    """Write `module`'s whole weights to a safetensors file (rank 0 writes; collective under ZeRO-3)."""
    from safetensors.torch import save_file

    out: dict = {}
    for name, p in module.named_parameters():
        with gathered([p]):
            if is_main_process():
                out[name] = p.detach().to("cpu", copy=True).contiguous()
    if is_main_process():
        from components.common.io import atomic_file

        with atomic_file(path) as tmp:
            save_file(out, str(tmp))


def load_module_weights(module, path: str | Path) -> None:
    """Load weights written by `save_module_weights` into `module` on every rank (collective under ZeRO-3:
    rank 0 reads the file and the new values are partitioned from it)."""
    import torch
    from safetensors.torch import load_file

    partitioned = any(hasattr(p, "ds_id") for p in module.parameters())
    state = load_file(str(path)) if (is_main_process() or not partitioned) else None
    with torch.no_grad():
        for name, p in module.named_parameters():
            with gathered_for_update([p]):
                if state is not None:
                    if name not in state:
                        raise ValueError(f"{path}: no tensor {name!r}; the file belongs to another model")
                    p.copy_(state[name].to(p.device, p.dtype))


@contextlib.contextmanager
def zero3_init_suspended() -> Iterator[None]:
    """Load a model on one process while ZeRO-3 is configured (transformers would otherwise partition it over all
    ranks as it loads, which waits for the others)."""
    from transformers.integrations import deepspeed as hf_ds

    ref = hf_ds._hf_deepspeed_config_weak_ref
    hf_ds.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_ds._hf_deepspeed_config_weak_ref = ref


# --- parameters -------------------------------------------------------------------------------------------------


def _canonical(name: str) -> str:
    return name.replace("base_model.model.", "").replace(".base_layer", "")


def param_digest(model_or_state: Any) -> dict[str, tuple[float, float]]:
    """name -> (sum, sum of squares) of every weight in float64: a cheap fingerprint that tells which tensors
    training changed. Takes a model (whole weights gathered one tensor at a time under ZeRO-3, so call it on every
    rank) or a state dict; LoRA adapter tensors are left out and wrapped names mapped back to the base model's."""
    import torch

    items = model_or_state.items() if isinstance(model_or_state, dict) else model_or_state.named_parameters()
    out = {}
    with torch.no_grad():
        for name, p in items:
            if "lora_" in name:
                continue
            with gathered([p]):
                t = p.detach().double()
                out[_canonical(name)] = (float(t.sum()), float((t * t).sum()))
    return out


def load_trained_checkpoint(start_ref: str, ckpt: str | Path | None):
    """The model a Trainer checkpoint holds, on the CPU in its saved dtype: its whole weights, or (a LoRA
    checkpoint) the start model with the checkpoint's adapters merged in; `ckpt=None` gives the start model itself.
    Under ZeRO-3 call it inside `zero3_init_suspended()`."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from components.common.modeling import resolve_model_dir

    if ckpt is None:
        return Qwen2_5_VLForConditionalGeneration.from_pretrained(resolve_model_dir(start_ref), dtype="auto")
    ckpt = Path(ckpt)
    if (ckpt / "adapter_config.json").is_file():
        from peft import PeftModel

        base = Qwen2_5_VLForConditionalGeneration.from_pretrained(resolve_model_dir(start_ref), dtype="auto")
        return PeftModel.from_pretrained(base, str(ckpt)).merge_and_unload()
    return Qwen2_5_VLForConditionalGeneration.from_pretrained(str(ckpt), dtype="auto")


def changed_fraction(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> float:
    """Fraction of the parameter tensors in both digests whose digest differs."""
    common = [n for n in before if n in after]
    return sum(before[n] != after[n] for n in common) / len(common) if common else 0.0


# --- logging ----------------------------------------------------------------------------------------------------


def step_stats_callback():
    """A TrainerCallback adding `step_seconds` (wall time of the optimizer step) and, on GPU, `peak_memory_gib`
    (peak allocated since the previous log line) to every log entry."""
    import torch
    from transformers import TrainerCallback

    class StepStats(TrainerCallback):
        def __init__(self):
            self.t0 = None
            self.last = None

        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if self.t0 is not None:
                self.last = time.perf_counter() - self.t0

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.log_history:
                return
            entry = state.log_history[-1]  # the Trainer stored its copy of `logs` before calling back
            if self.last is not None:
                entry["step_seconds"] = round(self.last, 4)
            if torch.cuda.is_available():
                entry["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
                torch.cuda.reset_peak_memory_stats()

    return StepStats()


def init_process_group() -> None:
    """The default process group of a torchrun / accelerate-launched run, for work done before the trainer's
    arguments exist (e.g. sharing teacher generation); the trainer and DeepSpeed reuse it."""
    import os

    import torch
    import torch.distributed as dist

    if not dist.is_available() or dist.is_initialized() or int(os.environ.get("WORLD_SIZE", 1)) < 2:
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")


def gather_trained_model(trainer):
    """(model to save, whole-weights state dict or None, its parameter digest) of a trainer's current model on rank 0;
    (None, None, None) on the others after they took part in the gathering. LoRA adapters are merged in."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if trainer.is_deepspeed_enabled:
        state = trainer.accelerator.get_state_dict(trainer.deepspeed)  # ZeRO-3 shards gathered on rank 0
        return (model, state, param_digest(state)) if is_main_process() else (None, None, None)
    if not is_main_process():
        return None, None, None
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model, None, param_digest(model)


def restore_checkpoint_weights(model, ckpt: str | Path) -> None:
    """Load a Trainer checkpoint's whole weights into `model` (full-weight training without DeepSpeed).

    transformers 5 saves Qwen2.5-VL weights under the original checkpoint names (`visual.*`, `model.layers.*`) and
    the Trainer's resume loads them with a non-strict `load_state_dict`, which matches none of them and silently
    keeps the start weights; `from_pretrained` maps the names, so the weights are read through it and copied in."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    saved = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(ckpt), dtype="auto")
    model.load_state_dict(saved.state_dict(), strict=True)
    del saved
