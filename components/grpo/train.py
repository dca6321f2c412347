"""The sharpen step: TRL GRPO (consistency-aware when `consistency_bonus` > 0), resumable, with a support guard
that stops a collapsing run and ships the best checkpoint before the collapse.

    from components.grpo.config import SharpenConfig, SharpenIO
from components.grpo.rollout import SharedPrefixRollout, require_rollout_backend, rollout_trainer_args
    from components.grpo.train import train_grpo
    metrics = train_grpo(SharpenConfig(max_steps=5),
                         SharpenIO("Qwen/Qwen2.5-VL-7B-Instruct", "rl_set/", "diag_set/", "diagnosis/", "out/model"))

Flow (every process of a multi-GPU run goes through it; rank 0 alone writes files):
  rows from rl_set -> steps (max_steps, or `epochs` passes at prompts_per_step x processes x accumulation per step)
  -> TRL arguments (before the model loads: under ZeRO-3 the weights are partitioned as they load) -> model
  -> trainer (+ GRPO-CARE) -> resume from the newest complete checkpoint of this task, if any
  -> train: the guard measures the watch slice at step 0 and every `watch_every_steps` steps, a checkpoint is saved
     at those steps (and on SIGTERM: save, then exit 143), a collapse stops training
  -> guard_decision: the trained model, or the best watch point before a collapse -> model dir + train_log.json +
     metrics.json + support_watch.png + lineage.json; the task's checkpoints are deleted unless keep_checkpoints.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

from components.common.artifacts import read_diagnosis
from components.common.io import atomic_dir, write_json
from components.common.lineage import write_lineage
from components.common.schema import stamp
from components.common.records import MCQRecord, balanced_take, load_records
from components.common.training import (
    effective_learning_rate,
    runtime_args,
    steps_for_epochs,
)
from components.grpo.config import SharpenConfig, SharpenIO
from components.grpo.rollout import SharedPrefixRollout, require_rollout_backend, rollout_trainer_args

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
TRAIN_LOG_FILE = "train_log.json"
WATCH_PLOT_FILE = "support_watch.png"
# What MedBridge adds to a Trainer checkpoint.
EMA_FILE = "care_ema_reference.safetensors"
WATCH_FILE = "support_watch.json"
PREEMPTED_STATUS = 143  # 128 + SIGTERM: the checkpoint is saved, the task should be retried


def build_grpo_rows(records: list[MCQRecord], dataset_dir: str | Path, fmt: str) -> list[dict[str, Any]]:
    """TRL GRPO rows: conversational prompt, the image's path (read when a batch needs it: `rows_dataset`), the
    answer letter and the options (for the rewards)."""
    from components.common.prompts import build_messages

    # load_records has checked that every image path exists.
    return [
        {"prompt": build_messages(r, fmt), "image": str(Path(dataset_dir) / r.image) if r.image else None,
         "answer": r.answer, "options": r.options}
        for r in records
    ]


def rows_dataset(rows: list[dict[str, Any]], cache_images: int):
    """TRL's train dataset for GRPO rows whose "image" is a PIL image or a file path.

    TRL's dataloader hands every accumulation micro-step the whole generation batch again (its RepeatSampler repeats
    the batch `steps_per_generation` times; only the first pass generates), so each row is fetched that many times
    per optimizer step. Images stay out of the Arrow table (no PNG encoding at build time, no decoding at every
    fetch): in-memory images are kept as they are, files are read on first use into an LRU cache of
    `cache_images` images."""
    import functools

    from datasets import Dataset

    from components.common.records import open_rgb

    held: list[Any] = []
    table = []
    for r in rows:
        img = r.get("image")
        ref = "" if img is None else str(img) if isinstance(img, (str, Path)) else f"#{len(held)}"
        if ref.startswith("#"):
            held.append(img)
        table.append({**{k: v for k, v in r.items() if k != "image"}, "image_ref": ref})
    load = functools.lru_cache(maxsize=max(1, cache_images))(open_rgb)

    def with_images(batch: dict[str, list]) -> dict[str, list]:
        refs = batch.pop("image_ref")
        batch["image"] = [None if not x else held[int(x[1:])] if x.startswith("#") else load(x) for x in refs]
        return batch

    dataset = Dataset.from_list(table)
    dataset.set_transform(with_images)
    return dataset


def grpo_max_steps(cfg: SharpenConfig, n_prompts: int, n_processes: int) -> tuple[int, str]:
    """(optimizer steps, the rule that gave them): `max_steps` when set, else `epochs` passes over the prompts at
    prompts_per_step x processes x gradient_accumulation_steps distinct prompts per step (TRL's sampler drops a
    last, partial batch)."""
    if cfg.max_steps > 0:
        return cfg.max_steps, f"max_steps {cfg.max_steps} set by the recipe"
    per_step = cfg.prompts_per_step * n_processes * cfg.gradient_accumulation_steps
    steps = steps_for_epochs(n_prompts, per_step, cfg.epochs, drop_last=True)
    return steps, (
        f"{cfg.epochs:g} epoch(s) over {n_prompts} prompts at {per_step} prompts per step "
        f"({cfg.prompts_per_step} per process x {n_processes} process(es) x {cfg.gradient_accumulation_steps} "
        f"accumulation) = {steps} steps"
    )


def grpo_trainer_args(
    cfg: SharpenConfig, *, max_steps: int, on_cuda: bool, output_dir: str, suppress: list[int]
) -> dict[str, Any]:
    """The keyword arguments of TRL's GRPOConfig for `cfg` (every TRL-facing field of SharpenConfig lands here)."""
    return dict(
        output_dir=output_dir,
        max_steps=max_steps,
        learning_rate=effective_learning_rate("grpo", cfg.learning_rate, cfg.lora),
        num_generations=cfg.num_generations,
        per_device_train_batch_size=cfg.prompts_per_step * cfg.num_generations,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        max_completion_length=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        beta=cfg.beta,
        reward_weights=[1.0, cfg.format_weight],
        generation_kwargs={"suppress_tokens": suppress},
        **rollout_trainer_args(cfg.rollout, steps_per_generation=cfg.steps_per_generation,
                               vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization),
        **runtime_args(
            on_cuda, deepspeed=cfg.deepspeed, seed=cfg.seed, save_steps=cfg.watch_every_steps,
            max_grad_norm=cfg.max_grad_norm, offload_optimizer=cfg.offload_optimizer,
            gradient_checkpointing=cfg.gradient_checkpointing,
        ),
        use_liger_kernel=cfg.liger_kernels,
    )



def make_grpo_trainer(cfg: SharpenConfig, *, model, processor, args, rows: list[dict[str, Any]]):
    """TRL's GRPOTrainer for `cfg` (GRPO-CARE's subclass when consistency_bonus > 0): the accuracy and format rewards,
    LoRA adapters when `cfg.lora`, and the rollout engine `cfg.rollout` (shared_prefix: TRL's `rollout_func`; vllm:
    set in `args`; trl: TRL's own generation). The benchmarks build the same trainer through this function."""
    from components.common.training import lora_config
    from components.grpo.rewards import accuracy_reward, make_format_reward

    common = dict(
        model=model,
        reward_funcs=[accuracy_reward, make_format_reward(cfg.prompt_format)],
        args=args,
        # Distinct prompts one generation batch holds (x2: the next batch's while this one's are still cached).
        train_dataset=rows_dataset(rows, 2 * cfg.prompts_per_step * max(cfg.steps_per_generation,
                                                                        cfg.gradient_accumulation_steps)),
        processing_class=processor,
        peft_config=lora_config(cfg.lora_r, cfg.lora_alpha, 0.0, cfg.lora_target_modules) if cfg.lora else None,
    )
    if cfg.rollout == "shared_prefix":
        import warnings

        warnings.filterwarnings("ignore", message="You are using 'rollout_func'")  # TRL marks it experimental
        common["rollout_func"] = SharedPrefixRollout(max_rows=cfg.rollout_max_rows, seed=cfg.seed)
    from components.grpo.care import ConsistencyGRPOTrainer, MedBridgeGRPOTrainer

    if cfg.liger_kernels:  # TRL's use_liger_kernel misses transformers 5's text rotary embedding
        from components.common.modeling import liger_text_rope

        liger_text_rope()
    if cfg.consistency_bonus > 0:
        trainer = ConsistencyGRPOTrainer(
            **common, bonus=cfg.consistency_bonus, upper_bound=cfg.confidence_upper_bound,
            margin=cfg.consistency_margin, ema_decay=cfg.ema_decay, ema_every=cfg.ema_every,
            shared_prefix_scoring=cfg.rollout != "trl",
        )
    else:
        trainer = MedBridgeGRPOTrainer(**common)
    trainer.enable_prompt_once(cfg.shared_prompt_forward)
    return trainer


# Fields that change where or how long checkpoints are kept, not what is trained.
_NOT_FINGERPRINTED = ("keep_checkpoints", "num_processes")


def task_checkpoint_dir(cfg: SharpenConfig, io: SharpenIO, n_processes: int) -> Path:
    """$MEDBRIDGE_CACHE/checkpoints/grpo-<fingerprint of the inputs' content, the settings and the process count>."""
    from components.common.checkpoints import checkpoint_root
    from components.common.fingerprint import task_fingerprint

    params = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_FINGERPRINTED}
    params["processes"] = n_processes
    inputs = {"model": io.model, "init_model": io.init_model or None, "rl_set": io.rl_set,
              "watch_set": io.watch_set, "diagnosis": io.diagnosis}
    return checkpoint_root("grpo", task_fingerprint("grpo", inputs, params))


def _guard_callback(measure, every: int, history: list, tolerance: float, stop_on_collapse: bool):
    """A TrainerCallback: step 0 (unless resumed) and every `every` steps, measure the watch slice and append the point
    to `history`; on a collapse (and `stop_on_collapse`) stop training without saving that step."""
    from transformers import TrainerCallback

    from components.grpo.guard import collapsed

    class SupportGuard(TrainerCallback):
        def __init__(self):
            self.stopped_at: int | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            if not history:
                history.append({"step": 0, **measure()})
            return control

        def on_step_end(self, args, state, control, **kwargs):
            step = state.global_step
            if every and step % every == 0:
                point = {"step": step, **measure()}
                history.append(point)
                log.info("support watch at step %d: corrected Pass@K %.3f %s, corrected Acc@1 %.3f", step,
                         point["pass_corrected"], point["pass_corrected_ci"], point["acc_corrected"])
                if stop_on_collapse and collapsed(point, history[0], tolerance):
                    log.warning("support collapsed at step %d: stopping", step)
                    control.should_training_stop = True
                    control.should_save = False  # the best checkpoint before the collapse is already on disk
                    self.stopped_at = step
            return control

    return SupportGuard()


def _shipped_model(trainer, ship_step: int, final_step: int, start: str, root: Path):
    """(model to save, gathered state dict or None, its parameter digest): rank 0 gets them, other ranks (None, ...)
    after taking part in the collectives."""
    from components.common.checkpoints import check_complete
    from components.common.training import (
        gather_trained_model,
        is_main_process,
        load_trained_checkpoint,
        param_digest,
        zero3_init_suspended,
    )

    if ship_step == final_step:
        return gather_trained_model(trainer)
    if not is_main_process():
        return None, None, None
    ckpt = None
    if ship_step > 0:
        ckpt = root / f"checkpoint-{ship_step}"
        reason = check_complete(ckpt)
        if reason is not None:
            raise RuntimeError(f"the guard chose step {ship_step} but {ckpt} is not usable: {reason}")
    with zero3_init_suspended():
        model = load_trained_checkpoint(start, ckpt)
    return model, None, param_digest(model)


def train_grpo(cfg: SharpenConfig, io: SharpenIO) -> dict[str, Any]:
    """Train `io.init_model` (bridge) or `io.model` (sharpen) with GRPO on `io.rl_set`; write the model to `io.out`."""
    import torch
    from trl import GRPOConfig
    from trl.models import unwrap_model_for_generation

    from components.common.checkpoints import (
        StopRequest,
        checkpoint_callbacks,
        read_json_in,
        resume_point,
    )
    from components.common.launch import dist_info
    from components.common.modeling import load_model_and_processor, load_processor, require_liger
    from components.common.sampling import suppressed_token_ids
    from components.common.training import (
        barrier,
        changed_fraction,
        is_main_process,
        load_module_weights,
        param_digest,
        restore_checkpoint_weights,
        save_module_weights,
        step_stats_callback,
    )
    from components.grpo.guard import (
        best_before,
        guard_decision,
        measure_support,
        plot_watch,
        summarize_support,
    )

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

    require_rollout_backend(cfg.rollout)
    on_cuda = torch.cuda.is_available()
    require_liger(cfg.liger_kernels, on_cuda=on_cuda)
    n_processes = dist_info().world_size
    root = Path(io.checkpoint_dir) if io.checkpoint_dir else task_checkpoint_dir(cfg, io, n_processes)
    max_steps, steps_rule = grpo_max_steps(cfg, len(with_image), n_processes)
    max_pixels = cfg.max_pixels or None
    processor = load_processor(start, max_pixels=max_pixels)
    # Before the model loads: under ZeRO-3 these arguments make from_pretrained partition the weights.
    args = GRPOConfig(**grpo_trainer_args(
        cfg, max_steps=max_steps, on_cuda=on_cuda, output_dir=str(root),
        suppress=suppressed_token_ids(processor.tokenizer),
    ))
    _ = args.device  # sets up the process group of a multi-process run

    # Resume from the newest complete checkpoint of this task (same inputs, same settings), if any.
    resume = resume_point(root, max_steps)
    torch.manual_seed(cfg.seed)
    model, processor = load_model_and_processor(start, device=None if cfg.deepspeed else "auto", max_pixels=max_pixels)
    before = param_digest(model)
    if resume and not cfg.deepspeed and not cfg.lora:
        restore_checkpoint_weights(model, resume)  # (DeepSpeed and LoRA checkpoints load through the Trainer)

    trainer = make_grpo_trainer(cfg, model=model, processor=processor, args=args,
                                rows=build_grpo_rows(with_image, rl_set_dir, cfg.prompt_format))
    ema = getattr(trainer, "ema_model", None)
    policy_forward = "prompt once" if trainer.prompt_once else f"TRL's, per row: {trainer.prompt_once_why}"
    if is_main_process():
        print(f"[grpo] policy forward: {policy_forward}", flush=True)

    history: list[dict[str, Any]] = read_json_in(resume, WATCH_FILE)["history"] if resume else []
    if resume and ema is not None:
        load_module_weights(ema, Path(resume) / EMA_FILE)

    def measure() -> dict[str, Any]:
        import torch

        from components.grpo.adapters import merged_unless_sharded

        with (unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator, gather_deepspeed3_params=True) as m,
              torch.no_grad(), merged_unless_sharded(trainer, m)):  # sample as served
            outcomes = measure_support(
                m, processor, watch, watch_set_dir, k=cfg.k, fmt=cfg.prompt_format,
                max_new_tokens=cfg.watch_max_new_tokens, seed=cfg.seed,
            )
        return summarize_support(outcomes, cfg.k, seed=cfg.seed)

    def save_extra(ckpt: Path) -> None:  # what a Trainer checkpoint lacks: the EMA reference, the watch history
        if ema is not None:
            save_module_weights(ema, ckpt / EMA_FILE)
        if is_main_process():
            write_json(ckpt / WATCH_FILE, {"history": history})

    def keep(step: int) -> set[int]:  # the newest checkpoint and the guard's best so far
        return {step, best_before(history, len(history), cfg.collapse_tolerance)["step"]} if history else {step}

    stop = StopRequest()
    guard = _guard_callback(measure, cfg.watch_every_steps, history, cfg.collapse_tolerance, cfg.stop_on_collapse)
    preemption, completion = checkpoint_callbacks(root, stop, extra=save_extra, keep=keep)
    for cb in (step_stats_callback(), guard, preemption, completion):
        trainer.add_callback(cb)
    with stop:
        trainer.train(resume_from_checkpoint=resume)
    final_step = trainer.state.global_step
    if preemption.preempted:
        barrier()
        log.warning("stopped by SIGTERM after step %d; checkpoint saved under %s", final_step, root)
        raise SystemExit(PREEMPTED_STATUS)
    if history[-1]["step"] != final_step:
        history.append({"step": final_step, **measure()})

    decision = guard_decision(history, cfg.collapse_tolerance, cfg.stop_on_collapse)
    start_point = history[0]
    shipped = next(h for h in history if h["step"] == decision.ship_step)
    to_save, state, after = _shipped_model(trainer, decision.ship_step, final_step, start, root)

    steps = [h for h in trainer.state.log_history if "reward" in h]
    rewards = [h["reward"] for h in steps]
    metrics = {
        "steps": final_step,
        "steps_planned": max_steps,
        "steps_rule": steps_rule,
        "num_processes": n_processes,
        "learning_rate": args.learning_rate,
        "n_prompts": len(with_image),
        "dropped_text_only": dropped,
        "reward_mean_first": rewards[0] if rewards else None,
        "reward_mean_last": rewards[-1] if rewards else None,
        "k": cfg.k,
        "watch_questions": len(watch),
        # "before" = step 0; "after" = the shipped model (the trained one unless the guard chose an earlier step).
        "pass_at_k_before": start_point["pass_at_k"],
        "pass_at_k_after": shipped["pass_at_k"],
        "acc_at_1_before": start_point["acc_at_1"],
        "acc_at_1_after": shipped["acc_at_1"],
        "pass_corrected_before": start_point["pass_corrected"],
        "pass_corrected_after": shipped["pass_corrected"],
        "acc_corrected_before": start_point["acc_corrected"],
        "acc_corrected_after": shipped["acc_corrected"],
        "support_collapsed": decision.collapsed,
        "collapse_tolerance": cfg.collapse_tolerance,
        "shipped_step": decision.ship_step,
        "guard": decision.as_dict(),
        "resumed_from": resume,
        "checkpoint_dir": str(root),
        "consistency_aware": cfg.consistency_bonus > 0,
        "policy_forward": policy_forward,
        "policy_forward_calls": dict(getattr(trainer, "prompt_once_calls", {})),
        "params_changed_fraction": changed_fraction(before, after) if after is not None else None,
        "init_from": "init_model" if io.init_model else "model",
        "diagnosis_branch": (diagnosis.get("decision") or {}).get("branch"),
    }
    summary = (
        f"GRPO{'-CARE' if cfg.consistency_bonus > 0 else ''} {final_step} steps on {len(with_image)} questions "
        f"from {metrics['init_from']}; reward {_fmt(metrics['reward_mean_first'])}->{_fmt(metrics['reward_mean_last'])}, "
        f"corrected Pass@{cfg.k} {start_point['pass_corrected']:.3f}->{shipped['pass_corrected']:.3f}, "
        f"corrected Acc@1 {start_point['acc_corrected']:.3f}->{shipped['acc_corrected']:.3f}; "
        f"shipped step {decision.ship_step}" + ("; SUPPORT COLLAPSED" if decision.collapsed else "")
    )
    if is_main_process():
        with atomic_dir(io.out) as tmp:
            from components.common.training import save_model_dir

            save_model_dir(to_save, processor, tmp, state_dict=state)
            write_json(tmp / TRAIN_LOG_FILE, stamp({"steps": steps, "support_watch": history, "guard": decision.as_dict()},
                                                   "train_log"))
            write_json(tmp / METRICS_FILE, metrics)
            plot_watch(history, tmp / WATCH_PLOT_FILE, cfg.collapse_tolerance, decision)
            inputs = {"base_model": start, "rl_set": rl_set_dir, "watch_set": watch_set_dir, "diagnosis": io.diagnosis}
            if io.init_model:
                inputs["model_ref"] = io.model
            write_lineage(tmp, step="grpo", artifact="model", inputs=inputs, params=dataclasses.asdict(cfg),
                          summary=summary)
        if not cfg.keep_checkpoints:
            shutil.rmtree(root, ignore_errors=True)
    barrier()
    return metrics


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"
