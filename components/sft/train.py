"""The bridge step: TRL SFT on proximal data chosen from the diagnosis (optionally LoRA, optionally ZeRO-3).

    from components.sft.config import SFTIO, SFTConfig
    from components.sft.train import train_sft
    metrics = train_sft(SFTConfig(max_steps=5), SFTIO("Qwen/Qwen2.5-VL-7B-Instruct", "sft_set/", "diagnosis/", "out/model"))

Flow: read diagnosis.json -> select proximal records -> cap (class-balanced, seeded) -> TRL prompt/completion rows
-> SFTTrainer -> merge LoRA -> save a full HF model dir + train_log.json + metrics.json + lineage.json.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path
from typing import Any

from components.common.artifacts import read_diagnosis
from components.common.io import atomic_dir, write_json
from components.common.lineage import write_lineage
from components.common.schema import stamp
from components.common.training import changed_fraction, lora_config, runtime_args, save_model_dir, snapshot_params
from components.common.records import load_records
from components.sft.config import SFTIO, SFTConfig
from components.sft.data import Selection, build_sft_rows, cap_balanced, select_proximal

METRICS_FILE = "metrics.json"
TRAIN_LOG_FILE = "train_log.json"


def train_sft(cfg: SFTConfig, io: SFTIO) -> dict[str, Any]:
    """Select proximal records for the weak tasks/modalities of `io.diagnosis` and train `io.model` on them."""
    selection = select_proximal(load_records(io.sft_set), read_diagnosis(io.diagnosis))
    return fit_sft(
        cfg, io.model, selection, io.sft_set, io.out,
        inputs={"base_model": io.model, "sft_set": io.sft_set, "diagnosis": io.diagnosis},
    )


def fit_sft(
    cfg: SFTConfig,
    model_ref: str,
    selection: Selection,
    sft_set_dir: str | Path,
    out_dir: str | Path,
    inputs: dict[str, str],
    step: str = "sft",
) -> dict[str, Any]:
    """Train on `selection.records` (images under `sft_set_dir`) and write the model artifact to `out_dir`."""
    import torch
    from datasets import Dataset
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    from components.common.modeling import load_model_and_processor

    records = cap_balanced(selection.records, cfg.max_examples, cfg.seed)
    if not records:
        raise ValueError(f"{sft_set_dir}: no records to train on")
    dataset = Dataset.from_list(build_sft_rows(records, sft_set_dir, cfg.prompt_format))

    torch.manual_seed(cfg.seed)
    model, processor = load_model_and_processor(model_ref)
    model.train()
    on_cuda = model.device.type == "cuda"
    before = snapshot_params(model)
    args = TRLSFTConfig(
        output_dir=tempfile.mkdtemp(prefix="medbridge-sft-"),
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        warmup_steps=cfg.warmup_ratio,  # transformers 5: a float < 1 is a fraction of max_steps
        max_length=cfg.max_length,
        **runtime_args(on_cuda, deepspeed=cfg.deepspeed, seed=cfg.seed),
    )
    peft_config = None
    if cfg.lora:
        peft_config = lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules)
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=processor, peft_config=peft_config
    )
    trainer.train()

    trained = trainer.model
    if hasattr(trained, "merge_and_unload"):
        trained = trained.merge_and_unload()
    steps = [{"step": h["step"], "loss": h["loss"], "learning_rate": h.get("learning_rate")}
             for h in trainer.state.log_history if "loss" in h]
    final_loss = steps[-1]["loss"] if steps else None
    if final_loss is None or not math.isfinite(final_loss):
        raise RuntimeError(f"SFT ended without a finite loss (log: {steps[-3:]}); lower learning_rate")
    tasks = sorted({r.task for r in records})
    metrics = {
        "final_loss": final_loss,
        "first_loss": steps[0]["loss"],
        "steps": trainer.state.global_step,
        "n_examples": len(records),
        "tasks": tasks,
        "fell_back_to_all_tasks": selection.fell_back,
        "selection": selection.reason,
        "params_changed_fraction": changed_fraction(before, trained),
        "lora": cfg.lora,
    }
    summary = (
        f"SFT {metrics['steps']} steps on {len(records)} examples ({selection.reason}); "
        f"loss {steps[0]['loss']:.3f}->{final_loss:.3f}"
    )
    with atomic_dir(out_dir) as tmp:
        save_model_dir(trained, processor, tmp)
        write_json(tmp / TRAIN_LOG_FILE, stamp({"steps": steps}, "train_log"))
        write_json(tmp / METRICS_FILE, metrics)
        write_lineage(tmp, step=step, artifact="model", inputs=inputs, params=dataclasses.asdict(cfg), summary=summary)
    return metrics

