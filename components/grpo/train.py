"""The sharpen step: TRL GRPO (consistency-aware when `consistency_bonus` > 0) with a support-collapse guard.

    from components.grpo.config import SharpenConfig, SharpenIO
    from components.grpo.train import train_grpo
    metrics = train_grpo(SharpenConfig(max_steps=5),
                         SharpenIO("Qwen/Qwen2.5-VL-7B-Instruct", "rl_set/", "diag_set/", "diagnosis/", "out/model"))

Flow: open the model (io.init_model if given, else io.model) -> rows from rl_set -> measure Pass@K / Acc@1 on a
fixed slice of watch_set -> train -> measure again -> merge LoRA -> save a full HF model dir + train_log.json +
metrics.json + lineage.json.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from components.common.artifacts import read_diagnosis
from components.common.io import atomic_dir, write_json
from components.common.lineage import write_lineage
from components.common.schema import stamp
from components.common.training import changed_fraction, lora_config, runtime_args, save_model_dir, snapshot_params
from components.common.records import MCQRecord, balanced_take, load_records, open_image
from components.common.sampling import suppressed_token_ids
from components.grpo.config import SharpenConfig, SharpenIO

METRICS_FILE = "metrics.json"
TRAIN_LOG_FILE = "train_log.json"


def build_grpo_rows(records: list[MCQRecord], dataset_dir: str | Path, fmt: str) -> list[dict[str, Any]]:
    """TRL GRPO rows: conversational prompt, the PIL image, the answer letter and the options (for the rewards)."""
    from components.common.prompts import build_messages

    return [
        {"prompt": build_messages(r, fmt), "image": open_image(dataset_dir, r), "answer": r.answer, "options": r.options}
        for r in records
    ]






def train_grpo(cfg: SharpenConfig, io: SharpenIO) -> dict[str, Any]:
    """Train `io.init_model` (bridge) or `io.model` (sharpen) with GRPO on `io.rl_set`; write the model to `io.out`."""
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from components.common.modeling import load_model_and_processor
    from components.grpo.guard import make_support_watch_callback, measure_support, support_collapsed
    from components.grpo.rewards import accuracy_reward, format_reward

    start = io.init_model or io.model
    rl_set_dir, watch_set_dir = io.rl_set, io.watch_set
    diagnosis = read_diagnosis(io.diagnosis)

    records = load_records(rl_set_dir)
    with_image = [r for r in records if r.image is not None]
    dropped = len(records) - len(with_image)
    if not with_image:
        raise ValueError(f"{rl_set_dir}: no record has an image; the sharpen step trains on image questions")
    if cfg.max_prompts:
        with_image = balanced_take(with_image, cfg.max_prompts, lambda r: r.task, cfg.seed)
    watch = balanced_take(load_records(watch_set_dir), cfg.watch_size, lambda r: r.task, cfg.seed)
    if not watch:
        raise ValueError(f"{watch_set_dir}: watch set is empty; pass the diagnosis MCQ set")

    torch.manual_seed(cfg.seed)
    model, processor = load_model_and_processor(start)
    on_cuda = model.device.type == "cuda"
    before = snapshot_params(model)

    def measure(m=None):
        return measure_support(
            m if m is not None else model, processor, watch, watch_set_dir, k=cfg.k, fmt=cfg.prompt_format,
            max_new_tokens=cfg.watch_max_new_tokens, seed=cfg.seed,
        )

    support_before = measure()

    suppress = suppressed_token_ids(processor.tokenizer)
    tmp_out = tempfile.mkdtemp(prefix="medbridge-grpo-")
    args = GRPOConfig(
        output_dir=tmp_out,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        num_generations=cfg.num_generations,
        per_device_train_batch_size=cfg.prompts_per_step * cfg.num_generations,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        max_completion_length=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        beta=cfg.beta,
        reward_weights=[1.0, cfg.format_weight],
        generation_kwargs={"suppress_tokens": suppress},
        **runtime_args(on_cuda, deepspeed=cfg.deepspeed, seed=cfg.seed),
    )
    peft_config = None
    if cfg.lora:
        peft_config = lora_config(cfg.lora_r, cfg.lora_alpha, 0.0, cfg.lora_target_modules)
    common = dict(
        model=model,
        reward_funcs=[accuracy_reward, format_reward],
        args=args,
        train_dataset=Dataset.from_list(build_grpo_rows(with_image, rl_set_dir, cfg.prompt_format)),
        processing_class=processor,
        peft_config=peft_config,
    )
    if cfg.consistency_bonus > 0:
        from components.grpo.care import ConsistencyGRPOTrainer

        trainer = ConsistencyGRPOTrainer(
            **common, bonus=cfg.consistency_bonus, upper_bound=cfg.confidence_upper_bound,
            margin=cfg.consistency_margin, ema_decay=cfg.ema_decay, ema_every=cfg.ema_every,
        )
    else:
        trainer = GRPOTrainer(**common)
    watch_history: list[dict[str, Any]] = [{"step": 0, **support_before.as_dict()}]
    if cfg.watch_every_steps:
        trainer.add_callback(
            make_support_watch_callback(lambda: measure(trainer.model), cfg.watch_every_steps, watch_history)
        )
    trainer.train()

    trained = trainer.model
    if hasattr(trained, "merge_and_unload"):
        trained = trained.merge_and_unload()
    support_after = measure(trained)
    watch_history.append({"step": trainer.state.global_step, **support_after.as_dict()})
    collapsed = support_collapsed(support_before.pass_at_k, support_after.pass_at_k, cfg.collapse_tolerance)

    steps = [h for h in trainer.state.log_history if "reward" in h]
    rewards = [h["reward"] for h in steps]
    metrics = {
        "steps": trainer.state.global_step,
        "n_prompts": len(with_image),
        "dropped_text_only": dropped,
        "reward_mean_first": rewards[0] if rewards else None,
        "reward_mean_last": rewards[-1] if rewards else None,
        "pass_at_k_before": support_before.pass_at_k,
        "pass_at_k_after": support_after.pass_at_k,
        "acc_at_1_before": support_before.acc_at_1,
        "acc_at_1_after": support_after.acc_at_1,
        "k": cfg.k,
        "watch_questions": len(watch),
        "support_collapsed": collapsed,
        "collapse_tolerance": cfg.collapse_tolerance,
        "consistency_aware": cfg.consistency_bonus > 0,
        "params_changed_fraction": changed_fraction(before, trained),
        "init_from": "init_model" if io.init_model else "model",
        "diagnosis_branch": (diagnosis.get("decision") or {}).get("branch"),
    }
    summary = (
        f"GRPO{'-CARE' if cfg.consistency_bonus > 0 else ''} {metrics['steps']} steps on {len(with_image)} questions "
        f"from {metrics['init_from']}; reward {_fmt(metrics['reward_mean_first'])}->{_fmt(metrics['reward_mean_last'])}, "
        f"Pass@{cfg.k} {support_before.pass_at_k:.3f}->{support_after.pass_at_k:.3f}, "
        f"Acc@1 {support_before.acc_at_1:.3f}->{support_after.acc_at_1:.3f}"
        + ("; SUPPORT COLLAPSED" if collapsed else "")
    )
    with atomic_dir(io.out) as tmp:
        save_model_dir(trained, processor, tmp)
        write_json(tmp / TRAIN_LOG_FILE, stamp({"steps": steps, "support_watch": watch_history}, "train_log"))
        write_json(tmp / METRICS_FILE, metrics)
        inputs = {"base_model": start, "rl_set": rl_set_dir, "watch_set": watch_set_dir, "diagnosis": io.diagnosis}
        if io.init_model:
            inputs["model_ref"] = io.model
        write_lineage(tmp, step="grpo", artifact="model", inputs=inputs, params=dataclasses.asdict(cfg),
                      summary=summary)
    return metrics


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"

