"""The bridge step: TRL SFT on proximal data chosen from the diagnosis (full weights or LoRA, optionally ZeRO-3),
resumable, with targets in the prompt format GRPO will use.

    from components.sft.config import SFTIO, SFTConfig
    from components.sft.train import train_sft
    metrics = train_sft(SFTConfig(max_steps=5, prompt_format="direct"),
                        SFTIO("Qwen/Qwen2.5-VL-7B-Instruct", "sft_set/", "diagnosis/", "out/model"))

Flow (every process of a multi-GPU run goes through it; rank 0 alone writes files): read diagnosis.json -> select
proximal records -> cap (class-balanced, seeded) -> targets (answer-only for direct; teacher rationales, cached, for
think / scaffold) -> steps (max_steps, or `epochs` passes) -> TRL arguments (before the model loads: ZeRO-3
partitions it as it loads) -> SFTTrainer (vision tower frozen unless tune_vision) -> resume from the newest complete
checkpoint of this task, checkpoints every save_every_steps and on SIGTERM -> merge LoRA -> full HF model dir +
train_log.json + metrics.json + lineage.json.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path
from typing import Any

from components.common.artifacts import read_diagnosis
from components.common.io import atomic_dir, write_json
from components.common.lineage import write_lineage
from components.common.schema import stamp
from components.common.records import load_records
from components.common.training import (
    effective_learning_rate,
    runtime_args,
    steps_for_epochs,
)
from components.sft.config import SFTIO, SFTConfig
from components.sft.data import Selection, build_sft_rows, cap_balanced, select_proximal

METRICS_FILE = "metrics.json"
TRAIN_LOG_FILE = "train_log.json"
PREEMPTED_STATUS = 143  # 128 + SIGTERM: the checkpoint is saved, the task should be retried
_NOT_FINGERPRINTED = ("keep_checkpoints", "num_processes", "teacher_batch_size")


def train_sft(cfg: SFTConfig, io: SFTIO) -> dict[str, Any]:
    """Select proximal records for the weak tasks/modalities of `io.diagnosis` and train `io.model` on them."""
    selection = select_proximal(load_records(io.sft_set), read_diagnosis(io.diagnosis))
    return fit_sft(
        cfg, io.model, selection, io.sft_set, io.out,
        inputs={"base_model": io.model, "sft_set": io.sft_set, "diagnosis": io.diagnosis},
        teacher_model=io.teacher_model, rationale_cache=io.rationale_cache, checkpoint_dir=io.checkpoint_dir,
    )


def check_targets(cfg: SFTConfig, teacher_model: str) -> None:
    """Bad input found before any model loads: think / scaffold targets from a teacher need a teacher."""
    if cfg.prompt_format != "direct" and cfg.rationales == "teacher" and not teacher_model:
        raise ValueError(
            f"prompt_format={cfg.prompt_format!r} trains on teacher rationales: pass --teacher-model (the pipeline "
            "passes its labeller model), or use --prompt-format direct (answer-only targets)"
        )


def sft_max_steps(cfg: SFTConfig, n_examples: int, n_processes: int) -> tuple[int, str]:
    """(optimizer steps, the rule that gave them): max_steps when set, else `epochs` passes over the examples."""
    if cfg.max_steps > 0:
        return cfg.max_steps, f"max_steps {cfg.max_steps} set by the recipe"
    per_step = cfg.per_device_batch_size * n_processes * cfg.gradient_accumulation_steps
    steps = steps_for_epochs(n_examples, per_step, cfg.epochs, drop_last=False)
    return steps, (f"{cfg.epochs:g} epoch(s) over {n_examples} examples at {per_step} examples per step "
                   f"({cfg.per_device_batch_size} per process x {n_processes} process(es) x "
                   f"{cfg.gradient_accumulation_steps} accumulation) = {steps} steps")


def sft_trainer_args(cfg: SFTConfig, *, max_steps: int, on_cuda: bool, output_dir: str) -> dict[str, Any]:
    """The keyword arguments of TRL's SFTConfig for `cfg` (every TRL-facing field of SFTConfig lands here)."""
    return dict(
        output_dir=output_dir,
        max_steps=max_steps,
        learning_rate=effective_learning_rate("sft", cfg.learning_rate, cfg.lora),
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a float < 1 is a fraction of max_steps
        max_length=cfg.max_length,
        **{
            **runtime_args(on_cuda, deepspeed=cfg.deepspeed, seed=cfg.seed, save_steps=cfg.save_every_steps,
                           max_grad_norm=cfg.max_grad_norm, offload_optimizer=cfg.offload_optimizer,
                           gradient_checkpointing=cfg.gradient_checkpointing),
            "train_sampling_strategy": "group_by_length" if cfg.group_by_length else "random",
            # The sampler reads the `length` column, which transformers would otherwise drop before it (TRL's vision
            # collator reads only the columns it knows).
            "remove_unused_columns": not cfg.group_by_length,
            "use_liger_kernel": cfg.liger_kernels,
        },
    )


def require_speed_packages(cfg: SFTConfig) -> None:
    """Bad input found before any model loads: `liger_kernels: true` without the liger-kernel package or without a
    CUDA GPU."""
    import torch

    from components.common.modeling import require_liger

    require_liger(cfg.liger_kernels, on_cuda=torch.cuda.is_available())


def make_sft_trainer(cfg: SFTConfig, *, model, processor, args, rows: list[dict[str, Any]]):
    """TRL's SFTTrainer for `cfg`: LoRA adapters (vision tower's too with tune_vision) or full weights with the
    vision tower frozen unless tune_vision, and each row's token count as the `length` column when group_by_length
    (so transformers' length-grouped sampler needs no tokenisation pass). The benchmarks build it through here."""
    from datasets import Dataset
    from trl import SFTTrainer

    from components.common.training import freeze_vision, lora_config, lora_targets
    from components.sft.data import example_lengths

    peft_config = None
    if cfg.lora:
        peft_config = lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout,
                                  lora_targets(cfg.lora_target_modules, cfg.tune_vision))
    elif not cfg.tune_vision:
        freeze_vision(model)
    if cfg.group_by_length:
        rows = [{**r, "length": n} for r, n in zip(rows, example_lengths(rows, processor), strict=True)]
    if cfg.liger_kernels:  # TRL's use_liger_kernel misses transformers 5's text rotary embedding
        from components.common.modeling import liger_text_rope

        liger_text_rope()
    return SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=processor,
                      peft_config=peft_config)


def task_checkpoint_dir(step: str, cfg: SFTConfig, inputs: dict[str, str], n_processes: int) -> Path:
    """$MEDBRIDGE_CACHE/checkpoints/<step>-<fingerprint of the inputs' content, the settings, the process count>."""
    from components.common.checkpoints import checkpoint_root
    from components.common.fingerprint import task_fingerprint

    params = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_FINGERPRINTED}
    params["processes"] = n_processes
    return checkpoint_root(step, task_fingerprint(step, inputs, params))


def io_checkpoint_dir(cfg: SFTConfig, io: SFTIO, n_processes: int) -> Path:
    inputs = {"base_model": io.model, "sft_set": io.sft_set, "diagnosis": io.diagnosis,
              "teacher_model": io.teacher_model or None}
    return task_checkpoint_dir("sft", cfg, inputs, n_processes)


def fit_sft(
    cfg: SFTConfig,
    model_ref: str,
    selection: Selection,
    sft_set_dir: str | Path,
    out_dir: str | Path,
    inputs: dict[str, str],
    step: str = "sft",
    *,
    teacher_model: str = "",
    rationale_cache: str = "",
    checkpoint_dir: str = "",
) -> dict[str, Any]:
    """Train on `selection.records` (images under `sft_set_dir`) and write the model artifact to `out_dir`."""
    import torch
    from trl import SFTConfig as TRLSFTConfig

    from components.common.checkpoints import (
        StopRequest,
        checkpoint_callbacks,
        resume_point,
    )
    from components.common.launch import dist_info
    from components.common.modeling import load_model_and_processor
    from components.common.storage import cache_root
    from components.common.training import (
        barrier,
        changed_fraction,
        gather_trained_model,
        init_process_group,
        is_main_process,
        param_digest,
        restore_checkpoint_weights,
        save_model_dir,
        step_stats_callback,
    )
    from components.sft.rationales import (
        RationaleTable,
        template_rationale,
        write_rationales,
    )

    check_targets(cfg, teacher_model)
    require_speed_packages(cfg)
    records = cap_balanced(selection.records, cfg.max_examples, cfg.seed)
    if not records:
        raise ValueError(f"{sft_set_dir}: no records to train on")
    n_processes = dist_info().world_size
    with_teacher = {**inputs, "teacher_model": teacher_model or None}
    root = Path(checkpoint_dir) if checkpoint_dir else task_checkpoint_dir(step, cfg, with_teacher, n_processes)
    init_process_group()

    # Targets in the prompt format GRPO will use.
    if cfg.prompt_format == "direct":
        table = RationaleTable({}, {"source": "none (answer-only targets)"})
    elif cfg.rationales == "template":
        table = RationaleTable({r.id: template_rationale(r) for r in records}, {"source": "template"})
    else:
        table = write_rationales(
            records, sft_set_dir, teacher_model, rationale_cache or cache_root() / "sft" / "rationales",
            fmt=cfg.prompt_format, max_new_tokens=cfg.teacher_max_new_tokens, batch_size=cfg.teacher_batch_size,
            seed=cfg.seed,
        )
    rows = build_sft_rows(records, sft_set_dir, cfg.prompt_format, table.rationales)
    if not rows:
        raise ValueError(
            f"{sft_set_dir}: every one of {len(records)} teacher rationales was rejected (empty, or arguing for "
            f"another option); check --teacher-model {teacher_model!r}"
        )

    max_steps, steps_rule = sft_max_steps(cfg, len(rows), n_processes)
    on_cuda = torch.cuda.is_available()
    # Before the model loads: under ZeRO-3 these arguments make from_pretrained partition the weights.
    args = TRLSFTConfig(**sft_trainer_args(cfg, max_steps=max_steps, on_cuda=on_cuda, output_dir=str(root)))
    _ = args.device

    resume = resume_point(root, max_steps)
    torch.manual_seed(cfg.seed)
    model, processor = load_model_and_processor(
        model_ref, device=None if cfg.deepspeed else "auto", max_pixels=cfg.max_pixels or None
    )
    model.train()
    before = param_digest(model)
    if resume and not cfg.deepspeed and not cfg.lora:
        restore_checkpoint_weights(model, resume)  # (DeepSpeed and LoRA checkpoints load through the Trainer)
    trainer = make_sft_trainer(cfg, model=model, processor=processor, args=args, rows=rows)
    stop = StopRequest()
    preemption, completion = checkpoint_callbacks(root, stop)
    for cb in (step_stats_callback(), preemption, completion):
        trainer.add_callback(cb)
    with stop:
        trainer.train(resume_from_checkpoint=resume)
    if preemption.preempted:
        barrier()
        raise SystemExit(PREEMPTED_STATUS)

    to_save, state, after = gather_trained_model(trainer)
    steps = [{"step": h["step"], "loss": h["loss"], "learning_rate": h.get("learning_rate"),
              **{k: h[k] for k in ("step_seconds", "peak_memory_gib") if k in h}}
             for h in trainer.state.log_history if "loss" in h]
    final_loss = steps[-1]["loss"] if steps else None
    if final_loss is None or not math.isfinite(final_loss):
        raise RuntimeError(f"SFT ended without a finite loss (log: {steps[-3:]}); lower learning_rate")
    tasks = sorted({r.task for r in records})
    metrics = {
        "final_loss": final_loss,
        "first_loss": steps[0]["loss"],
        "steps": trainer.state.global_step,
        "steps_planned": max_steps,
        "steps_rule": steps_rule,
        "num_processes": n_processes,
        "learning_rate": args.learning_rate,
        "n_examples": len(rows),
        "tasks": tasks,
        "fell_back_to_all_tasks": selection.fell_back,
        "selection": selection.reason,
        "targets": table.stats,
        "params_changed_fraction": changed_fraction(before, after) if after is not None else None,
        "lora": cfg.lora,
        "tune_vision": cfg.tune_vision,
        "resumed_from": resume,
        "checkpoint_dir": str(root),
    }
    summary = (
        f"SFT {metrics['steps']} steps on {len(rows)} examples ({selection.reason}; targets: "
        f"{table.stats.get('source')}); loss {steps[0]['loss']:.3f}->{final_loss:.3f}"
    )
    if is_main_process():
        with atomic_dir(out_dir) as tmp:
            save_model_dir(to_save, processor, tmp, state_dict=state)
            write_json(tmp / TRAIN_LOG_FILE, stamp({"steps": steps}, "train_log"))
            write_json(tmp / METRICS_FILE, metrics)
            lineage_inputs = {**inputs, **({"teacher_model": teacher_model} if table.stats.get("teacher") else {})}
            write_lineage(tmp, step=step, artifact="model", inputs=lineage_inputs, params=dataclasses.asdict(cfg),
                          summary=summary)
        if not cfg.keep_checkpoints:
            shutil.rmtree(root, ignore_errors=True)
    barrier()
    return metrics
