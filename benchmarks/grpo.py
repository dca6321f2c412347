"""GRPO throughput of the sharpen step's own trainer on one GPU: TRL's generation and the project's rollout engine side by
side in the same run, with the split of a step and the fraction of the relevant bound.

    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 benchmarks/grpo.py --json-out /tmp/grpo_bench.json 2>&1 | tee grpo_bench.log
    PYTHONPATH=. python3 benchmarks/grpo.py --tiny --device cpu        # the tiny model on CPU: a smoke test (tests)

Trainer: `components.grpo.train.make_grpo_trainer`, i.e. TRL 1.16's GRPOTrainer with GRPO-CARE
(`ConsistencyGRPOTrainer`: EMA reference, consistency bonus), the accuracy and format rewards, LoRA (the
grpo_qwen25vl7b_care_lora recipe's adapters, lr 1e-5), bf16 and gradient checkpointing as `runtime_args` sets them on
a GPU. Only the rollout engine, the batch shape and the two speed knobs differ between runs (--runs, comma-separated
`ENGINE:PROMPTSxGENERATIONS[xACCUMULATION][+OPTION...]`; PROMPTS x GENERATIONS rows per micro-batch,
ACCUMULATION micro-batches per optimizer step, one on-policy rollout batch per optimizer step):
  trl:8x8+stockvis+fullfwd    the stock path: TRL's own `model.generate` (CARE's reference: one forward per
                              completion) and TRL's forward, transformers' per-window vision attention, 8 prompts x 8
                              completions per optimizer step, gradient checkpointing;
  shared_prefix:2x8x16+nockpt the project's engine (`rollout: shared_prefix`: one prefill per prompt, the group
                              decoded together with CUDA graphs; CARE's reference: each prompt once, all completions
                              of the batch together), 16-row micro-batches without gradient checkpointing
                              (`gradient_checkpointing: false`) and the policy's forward/backward running each prompt
                              and image once (`shared_prompt_forward`, on by default where it applies), 16
                              micro-batches per step: a 256-row rollout batch (32 prompts x 8);
  shared_prefix:4x8x8+nockpt  the same with 32-row micro-batches, 8 per step (the fastest shape that fits one H200);
  ...+fullfwd                 the same with TRL's forward (every row runs its prompt and image): what the shared
                              prompt forward saves.
Experiments, not recipe settings (the first two on the host overhead the profile of run C's step showed,
benchmarks/RESULTS.md):
  ...+bf16lora                the LoRA adapters cast to the base model's dtype before training (PEFT keeps them in
                              fp32, so every adapter call casts; Adam then updates bf16 adapter weights);
  ...+nocudnn                 the whole run with SDPA's cuDNN backend excluded (flash, memory-efficient or math
                              instead; cuDNN's attention had the largest host time per call);
  ...+stockvis                transformers' per-window vision attention (one attention call and one host sync per
                              window and layer) instead of the batched one every step's model loading now installs
                              (components/common/vision_attention.py): what batching the windows saves.
  ...+liger                   the recipe's liger_kernels: true (Liger's RMSNorm / SwiGLU / multimodal-RoPE kernels
                              in the policy's training passes, rollout and CARE scoring; needs liger-kernel and CUDA)
Each run builds a fresh model (same seed, same weights), does --warmup optimizer steps (CUDA-graph capture, allocator
warm-up) and then --steps timed ones.

Model: the Qwen2.5-VL-7B config (benchmarks/qwen25vl_7b.py) with the tiny test tokenizer's vocabulary (~7.2 B
parameters; the earlier stock measurement used the same), RANDOM bf16 weights built on the GPU. Over the tiny
vocabulary a random model samples the end token now and then (completions of ~150 of at most 256 tokens on average,
the same for both engines: same weights, same seed), and it never writes an answer: CARE's reference would then have
nothing to score, so this benchmark marks the last 4 tokens of every completion as its answer span (both engines
score them). Rewards are 0, so advantages are 0; the forward, backward and optimizer step
run all the same. Data: --image-size px random images (448 px -> 256 image tokens), 4-option questions, the direct
prompt format.

Printed per run: completion tokens/s per GPU including the policy update (completion tokens of the timed steps /
their wall time), the split of a step (generation = TRL's `_generate`: tokenisation + sampling; reward + CARE =
`_calculate_rewards`: the reward functions and the EMA reference's scoring; other scoring = the rest of
`_generate_and_score_completions`: image processing for the forward, padding, advantages; forward + backward =
`training_step` minus `_prepare_inputs`; optimizer = gradient clipping + `optimizer.step`; rest = data loading,
logging, callbacks), peak GPU memory, and the fraction of the relevant bound: per decode step the larger of (weights +
KV cache bytes) / measured bandwidth and its FLOPs / measured bf16 matmul rate; prefills, CARE scoring and the
training forward/backward at the measured matmul rate (model FLOPs: 2 x parameters x tokens + causal attention;
backward of a frozen base (LoRA) = 1 forward, of full weights 2; recomputation not counted). Also as a fraction of
the bf16 dense datasheet peak (989 TFLOP/s), and the garbage collector's pauses of the host per step by the phase
they hit (`gc.callbacks`). Then one SUMMARY line: best fast-path tokens/s, the stock path's, the
speed-up in the same run, and whether the targets (>= 2,500 tokens/s per GPU, >= 6x stock) are met.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BF16_DENSE_PEAK_TFLOPS = 989.0  # H100 SXM / H200 datasheet, dense bf16
TARGET_TOKENS_PER_S = 2500.0
TARGET_SPEEDUP = 6.0
RUN_OPTIONS = ("nockpt", "fullfwd", "bf16lora", "nocudnn", "stockvis", "liger")
ANSWER_SPAN = 4  # tokens CARE's reference scores per completion (a random model writes no <answer>)


def parse_run(spec: str) -> dict:
    """`ENGINE:PxG[xA][+OPTION...]` -> {"rollout", "prompts", "generations", "accumulation", "checkpointing",
    "prompt_once", "bf16_lora", "no_cudnn", "stock_vision", "name"}."""
    spec, *opts = spec.split("+")
    if set(opts) - set(RUN_OPTIONS):
        raise SystemExit(f"--runs: unknown option(s) {sorted(set(opts) - set(RUN_OPTIONS))} in {spec!r} "
                         f"(known: {', '.join('+' + o for o in RUN_OPTIONS)})")
    try:
        engine, shape = spec.split(":")
        parts = [int(x) for x in shape.lower().split("x")]
        prompts, gens, accum = (parts + [1])[:3] if len(parts) in (2, 3) else (None, None, None)
    except ValueError:
        raise SystemExit(f"--runs: {spec!r} is not ENGINE:PROMPTSxGENERATIONS[xACCUMULATION]") from None
    if prompts is None or engine not in ("trl", "shared_prefix", "vllm") or min(prompts, gens, accum) < 1:
        raise SystemExit(f"--runs: {spec!r} is not ENGINE:PROMPTSxGENERATIONS[xACCUMULATION] (engine trl, "
                         "shared_prefix or vllm)")
    return {"rollout": engine, "prompts": prompts, "generations": gens, "accumulation": accum,
            "checkpointing": "nockpt" not in opts, "prompt_once": "fullfwd" not in opts,
            "bf16_lora": "bf16lora" in opts, "no_cudnn": "nocudnn" in opts, "stock_vision": "stockvis" in opts,
            "liger": "liger" in opts,
            "name": "+".join([spec, *opts])}


def build_tiny_dir(work: Path, image_size: int) -> Path:
    from components.common.tiny_model import build_tiny_model

    tiny_dir = work / f"tiny-{image_size}px"
    if not (tiny_dir / "config.json").is_file():
        build_tiny_model(tiny_dir, seed=0, image_size=image_size)
    return tiny_dir


def build_model(tiny_dir: Path, tiny: bool, device: str, *, full_vocab: bool = False):
    """(model, processor): the tiny model itself (fp32), or the 7B-shaped random model built on `device` (bf16) with
    the tiny processor (`full_vocab`: the real 152,064-token vocabulary, see `random_qwen25vl_7b`)."""
    from components.common.modeling import load_model_and_processor, load_processor

    if tiny:
        return load_model_and_processor(str(tiny_dir), device=device)
    from benchmarks.qwen25vl_7b import random_qwen25vl_7b

    processor = load_processor(str(tiny_dir))
    return random_qwen25vl_7b(processor.tokenizer, device, full_vocab=full_vocab), processor


def build_rows(n: int, image_size: int, seed: int = 0) -> list[dict]:
    """GRPO rows (the sharpen step's `build_grpo_rows` format): random images, 4-option questions, direct format."""
    import numpy as np
    from PIL import Image

    from components.common.prompts import build_messages
    from components.common.records import MCQRecord

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        rec = MCQRecord(id=f"q{i}", question="Which finding does this image show?",
                        options=["normal", "pneumonia", "effusion", "mass"], answer="ABCD"[i % 4], image="x.png",
                        task="pmc-vqa", modality="X-ray")
        img = Image.fromarray(rng.integers(0, 255, (image_size, image_size, 3), dtype=np.uint8))
        rows.append({"prompt": build_messages(rec, "direct"), "image": img, "answer": rec.answer,
                     "options": rec.options})
    return rows


class StepTimer:
    """Wraps the trainer's phases (CUDA-synchronised) and records, per optimizer step, where its time went."""

    PHASES = ("generation", "reward_care", "other_scoring", "forward_backward", "optimizer", "rest")

    def __init__(self, trainer, cuda: bool):
        from transformers import TrainerCallback

        import gc

        self.cuda, self.steps, self.cur = cuda, [], self._fresh()
        self.active: list[str] = []  # the phases now running, innermost last
        self.gc: dict[str, float] = {}  # garbage-collector pauses of the current step, by phase
        self._gc_t0 = 0.0
        gc.callbacks.append(self._gc_pause)
        self.tokens = 0
        self.rows = 0
        for name in ("_generate", "_calculate_rewards", "_prepare_inputs", "training_step"):
            setattr(trainer, name, self._timed(name, getattr(trainer, name)))
        timer = self

        class Marks(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                timer.t_last = timer._now()

            def on_pre_optimizer_step(self, args, state, control, **kw):
                timer.t_opt = timer._now()

            def on_optimizer_step(self, args, state, control, **kw):
                timer.cur["optimizer_only"] += timer._now() - timer.t_opt

            def on_step_end(self, args, state, control, **kw):
                now = timer._now()
                step = dict(timer.cur, wall=now - timer.t_last, completion_tokens=timer.tokens, rows=timer.rows,
                            gc_pauses=timer.gc)
                timer.t_last, timer.cur, timer.tokens, timer.rows, timer.gc = now, timer._fresh(), 0, 0, {}
                if timer.cuda:
                    import torch

                    step["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
                    torch.cuda.reset_peak_memory_stats()
                timer.steps.append(step)

        trainer.add_callback(Marks())

    @staticmethod
    def _fresh() -> dict:
        return {"_generate": 0.0, "_calculate_rewards": 0.0, "_prepare_inputs": 0.0, "training_step": 0.0,
                "optimizer_only": 0.0}

    def _now(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def _gc_pause(self, phase: str, info: dict) -> None:
        """gc.callbacks hook: the time the garbage collector stops the host, by the innermost phase it hit."""
        if phase == "start":
            self._gc_t0 = time.perf_counter()
            return
        where = self.active[-1] if self.active else "rest"
        self.gc[where] = self.gc.get(where, 0.0) + time.perf_counter() - self._gc_t0

    def close(self) -> None:
        import gc

        if self._gc_pause in gc.callbacks:
            gc.callbacks.remove(self._gc_pause)

    def _timed(self, name, fn):
        def wrapper(*a, **kw):
            from torch.profiler import record_function

            t0 = self._now()
            self.active.append(name)
            try:
                with record_function(f"phase:{name}"):  # a row per phase in --profile's tables
                    out = fn(*a, **kw)
            finally:
                self.active.pop()
            self.cur[name] += self._now() - t0
            if name == "_generate":
                self.tokens += sum(len(c) for c in out[1])
                self.rows += len(out[1])
            return out

        return wrapper

    @staticmethod
    def split(step: dict) -> dict:
        """Seconds per phase of one optimizer step (the phases add up to its wall time)."""
        gen, rew, prep, ts = step["_generate"], step["_calculate_rewards"], step["_prepare_inputs"], step["training_step"]
        out = {"generation": gen, "reward_care": rew, "other_scoring": prep - gen - rew,
               "forward_backward": ts - prep, "optimizer": step["optimizer_only"]}
        out["rest"] = step["wall"] - sum(out.values())
        return out


def model_numbers(model) -> dict:
    """Parameter counts and shapes the FLOP and byte counts need."""
    text = model.model.language_model
    tc = text.config
    n_text = sum(p.numel() for p in text.parameters()) - text.embed_tokens.weight.numel()
    return {
        "text_params": n_text + model.lm_head.weight.numel(),
        "vision_params": sum(p.numel() for p in model.model.visual.parameters()),
        "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "layers": tc.num_hidden_layers, "hidden": tc.hidden_size,
        "kv_bytes_per_token": 2 * tc.num_hidden_layers * tc.num_key_value_heads
        * (tc.hidden_size // tc.num_attention_heads) * 2,
    }


def step_bounds(nums: dict, *, prompts: int, rows: int, prompt_len: int, new_tokens: int, patches: int, lora: bool,
                tflops: float, bandwidth: float, prompt_once: bool = False) -> dict:
    """Seconds each phase of one optimizer step would take at the measured matmul rate / bandwidth (see docstring).
    `prompt_once`: the training forward/backward runs each prompt and image once (what it then computes)."""
    n, layers, d = nums["text_params"], nums["layers"], nums["hidden"]

    vision = 2 * nums["vision_params"] * patches  # one image
    prefill = prompts * (vision + 2 * n * prompt_len + 2 * layers * d * prompt_len**2)
    decode = 0.0
    for t in range(new_tokens):
        flops = rows * (2 * n + 4 * layers * d * (prompt_len + t))
        bytes_ = nums["weight_bytes"] + (prompts * prompt_len + rows * t) * nums["kv_bytes_per_token"]  # prompt once
        decode += max(flops / (tflops * 1e12), bytes_ / bandwidth)
    length = prompt_len + new_tokens
    seq_fwd = 2 * n * length + 2 * layers * d * length**2  # one row, text only
    care = prompts * (vision + 2 * n * prompt_len + 2 * layers * d * prompt_len**2) + rows * (
        2 * n * new_tokens + 4 * layers * d * new_tokens * (prompt_len + new_tokens / 2))
    passes = 2 if lora else 3  # backward: 1 forward (frozen base) or 2 (full)
    if prompt_once:
        prompt_fwd = 2 * n * prompt_len + 2 * layers * d * prompt_len**2
        completion_fwd = 2 * n * new_tokens + 4 * layers * d * new_tokens * (prompt_len + new_tokens / 2)
        train = prompts * (prompt_fwd * passes + vision) + rows * completion_fwd * passes
    else:
        train = rows * (seq_fwd * passes + vision)
    rate = tflops * 1e12
    return {"generation": prefill / rate + decode, "reward_care": care / rate, "forward_backward": train / rate,
            "flops": {"prefill": prefill, "care": care, "train": train,
                      "decode": rows * new_tokens * (2 * n + 2 * layers * d * (prompt_len + new_tokens / 2))}}


def run_one(spec: dict, args, tiny_dir: Path, rows_all: list[dict], hw: dict) -> dict:
    import torch
    from trl import GRPOConfig

    from components.common.sampling import suppressed_token_ids
    from components.common.vision_attention import per_window_attention
    from components.grpo.config import SharpenConfig
    from components.grpo.rollout import require_rollout_backend
    from components.grpo.train import grpo_trainer_args, make_grpo_trainer

    require_rollout_backend(spec["rollout"])

    cuda = args.device.startswith("cuda")
    model, processor = build_model(tiny_dir, args.tiny, args.device)
    if spec.get("stock_vision"):
        per_window_attention(model)  # the policy and its EMA copy (made from it) both
    nums = model_numbers(model)
    cfg = SharpenConfig(
        prompt_format="direct", max_steps=args.warmup + args.steps, rollout=spec["rollout"],
        num_generations=spec["generations"], prompts_per_step=spec["prompts"],
        gradient_accumulation_steps=spec["accumulation"], max_new_tokens=args.max_new_tokens,
        lora=not args.full_weights, consistency_bonus=0.5, ema_every=10, seed=0,
        gradient_checkpointing=spec.get("checkpointing", True), shared_prompt_forward=spec.get("prompt_once", True),
        liger_kernels=spec.get("liger", False),
    )
    targs = grpo_trainer_args(cfg, max_steps=cfg.max_steps, on_cuda=cuda, output_dir=str(args.work / "trl"),
                              suppress=suppressed_token_ids(processor.tokenizer))
    n_rows = spec["prompts"] * spec["accumulation"] * cfg.max_steps
    trainer = make_grpo_trainer(cfg, model=model, processor=processor, args=GRPOConfig(**targs),
                                rows=rows_all[:n_rows])
    if spec.get("bf16_lora"):
        cast_adapters(trainer.model)
    timer = StepTimer(trainer, cuda)
    if args.profile:
        profile_step(trainer, at_step=args.warmup, cuda=cuda, name=spec["name"])
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        with (sdpa_without_cudnn() if spec.get("no_cudnn") else contextlib.nullcontext()), liger_contained():
            trainer.train()
    finally:
        timer.close()  # the gc hook goes with the run, also when it runs out of memory
    wall = time.perf_counter() - t0
    timed = timer.steps[args.warmup:]
    tokens = sum(s["completion_tokens"] for s in timed)
    seconds = sum(s["wall"] for s in timed)
    splits = [StepTimer.split(s) for s in timed]
    split = {k: sum(s[k] for s in splits) / len(splits) for k in StepTimer.PHASES}
    step_s = seconds / len(timed)
    out = {
        "run": spec["name"], "rollout": spec["rollout"], "prompts_per_step": spec["prompts"] * spec["accumulation"],
        "generations": spec["generations"], "accumulation": spec["accumulation"],
        "rows_per_step": timed[0]["rows"], "completion_tokens_per_step": tokens / len(timed),
        "seconds_per_step": step_s, "tokens_per_s": tokens / seconds, "split_s": split,
        "step_seconds_each": [round(s["wall"], 3) for s in timer.steps], "wall_s_incl_warmup": wall,
        "peak_gib": max((s.get("peak_gib", 0.0) for s in timed), default=None) if cuda else None,
        "care_scoring": "shared_prefix" if getattr(trainer, "shared_prefix_scoring", False) else "per_completion",
        "policy_forward": "prompt once" if trainer.prompt_once else f"TRL's ({trainer.prompt_once_why})",
        "policy_forward_calls": dict(getattr(trainer, "prompt_once_calls", {})),  # which path each forward took
        "gc_pause_s": {k: sum(s["gc_pauses"].get(k, 0.0) for s in timed) / len(timed)
                       for k in sorted({k for s in timed for k in s["gc_pauses"]})},  # host stops, per step
    }
    if hw.get("tflops"):
        prompt_len = _prompt_len(trainer, rows_all[0])
        grid = processor.image_processor(images=[rows_all[0]["image"]], return_tensors="pt")["image_grid_thw"][0]
        bounds = step_bounds(nums, prompts=out["prompts_per_step"], rows=out["rows_per_step"], prompt_len=prompt_len,
                             new_tokens=args.max_new_tokens, patches=int(grid.prod()), lora=cfg.lora,
                             prompt_once=trainer.prompt_once, tflops=hw["tflops"], bandwidth=hw["bandwidth"])
        bound_s = bounds["generation"] + bounds["reward_care"] + bounds["forward_backward"]
        flops = sum(bounds["flops"].values())
        out.update(
            prompt_len=prompt_len, bound_s=bounds, step_bound_fraction=bound_s / step_s,
            phase_bound_fraction={k: bounds[k] / split[k] for k in ("generation", "reward_care", "forward_backward")
                                  if split[k] > 0},
            model_tflops_per_s=flops / step_s / 1e12, mfu_vs_peak=flops / step_s / 1e12 / BF16_DENSE_PEAK_TFLOPS,
            train_mfu_vs_peak=bounds["flops"]["train"] / split["forward_backward"] / 1e12 / BF16_DENSE_PEAK_TFLOPS,
        )
    del trainer, model, timer
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return out


def cast_adapters(model) -> int:
    """Cast trainable adapter weights (PEFT's `lora_` parameters) to the dtype of the frozen base; returns how many."""
    frozen = next(p.dtype for p in model.parameters() if not p.requires_grad)
    n = 0
    for name, p in model.named_parameters():
        if p.requires_grad and "lora_" in name and p.dtype != frozen:
            p.data = p.data.to(frozen)
            n += 1
    return n


@contextlib.contextmanager
def liger_contained():
    """Liger swaps Qwen2.5-VL's rotary function and layer classes module-wide; put them back after a `+liger` run so
    that the runs after it in this process measure the stock kernels."""
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as module

    saved = dict(vars(module))
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def sdpa_without_cudnn():
    """SDPA restricted to the flash, memory-efficient and math backends (no cuDNN) for the block."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def profile_step(trainer, *, at_step: int, cuda: bool, name: str, top: int = 25) -> None:
    """torch.profiler around the whole optimizer step `at_step` (0-based; rollout, scoring, forward/backward,
    optimizer): prints how busy the GPU was inside each phase and its device time by kind of kernel
    (`benchmarks.gpu_profile`), then the ops with the most device time, then the most host time."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import TrainerCallback

    state = {}

    class Profile(TrainerCallback):
        def on_step_begin(self, args, st, control, **kw):
            if st.global_step == at_step:
                acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
                state["prof"] = profile(activities=acts, record_shapes=False)
                state["prof"].__enter__()

        def on_step_end(self, args, st, control, **kw):
            prof = state.pop("prof", None)
            if prof is None:
                return
            if cuda:
                torch.cuda.synchronize()
            prof.__exit__(None, None, None)
            if cuda:  # first the short summaries (the op tables of a whole step take minutes to build)
                from benchmarks.gpu_profile import busy_by_range, format_busy, kernel_time_by_category

                print(f"[grpo-profile] {name}: GPU busy inside each phase (wall >> busy: bound by the host)\n"
                      + format_busy(busy_by_range(prof, "phase:")), flush=True)
                cats = kernel_time_by_category(prof)
                print(f"[grpo-profile] {name}: device seconds by kernel kind: "
                      + ", ".join(f"{k} {v:.2f}" for k, v in cats.items()), flush=True)
            ka = prof.key_averages()
            key = "self_device_time_total" if cuda else "self_cpu_time_total"
            print(f"[grpo-profile] {name}, step {at_step}: top {top} ops by {key}", flush=True)
            print(ka.table(sort_by=key, row_limit=top, max_name_column_width=70), flush=True)
            print(f"[grpo-profile] {name}: top {top} ops by cpu_time_total", flush=True)
            print(ka.table(sort_by="cpu_time_total", row_limit=top, max_name_column_width=70), flush=True)

    trainer.add_callback(Profile())


def run_or_skip_oom(run, spec: dict, *args) -> dict:
    """`run(spec, *args)`, or {"run", "skipped"} when the GPU runs out of memory (the next run still gets its turn:
    a variant that does not fit is a finding, not a crash)."""
    import torch

    try:
        return run(spec, *args)
    except torch.OutOfMemoryError as e:
        gc.collect()
        torch.cuda.empty_cache()
        return {**spec, "run": spec["name"], "skipped": f"out of GPU memory ({str(e).splitlines()[0][:120]})"}


def _prompt_len(trainer, row) -> int:
    from trl.data_utils import prepare_multimodal_messages

    ids, _, _ = trainer._tokenize_prompts([prepare_multimodal_messages(row["prompt"], images=[row["image"]])])
    return len(ids[0])


def last_tokens_are_the_answer(pieces) -> list[bool]:
    """What CARE's reference scores in this benchmark: the last ANSWER_SPAN tokens (a random model writes no answer)."""
    n = len(pieces)
    return [i >= n - ANSWER_SPAN for i in range(n)]


def print_run(r: dict) -> None:
    s = r["split_s"]
    parts = ", ".join(f"{k} {s[k]:.2f}s ({s[k] / r['seconds_per_step']:.0%})" for k in StepTimer.PHASES)
    print(f"[grpo] {r['run']}: {r['tokens_per_s']:,.0f} completion tokens/s per GPU, {r['seconds_per_step']:.2f} s/step "
          f"({r['rows_per_step']} rows, {r['completion_tokens_per_step']:,.0f} tokens), CARE scoring "
          f"{r['care_scoring']}, policy forward {r['policy_forward']} (calls {r['policy_forward_calls']}); "
          f"split: {parts}", flush=True)
    if r.get("gc_pause_s"):
        print("[grpo]   garbage-collector pauses per step (inside the split's phases): "
              + ", ".join(f"{k} {v:.3f}s" for k, v in r["gc_pause_s"].items()), flush=True)
    if "step_bound_fraction" in r:
        pf = ", ".join(f"{k} {v:.0%}" for k, v in r["phase_bound_fraction"].items())
        print(f"[grpo]   of the bound: step {r['step_bound_fraction']:.0%} ({pf}); "
              f"{r['model_tflops_per_s']:.0f} model TFLOP/s = {r['mfu_vs_peak']:.1%} of 989 TFLOP/s "
              f"(forward+backward {r['train_mfu_vs_peak']:.1%}); peak {r['peak_gib'] or 0:.1f} GiB", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="shared_prefix:4x8x8+nockpt,shared_prefix:2x8x16+nockpt,trl:8x8+stockvis+fullfwd",
                   help="comma-separated ENGINE:PROMPTSxGENERATIONS[xACCUMULATION] (see above)")
    p.add_argument("--steps", type=int, default=2, help="timed optimizer steps per run")
    p.add_argument("--warmup", type=int, default=1, help="optimizer steps before timing (graph capture, allocator)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="completion length (a random model fills it)")
    p.add_argument("--image-size", type=int, default=448, help="image side in pixels (448 -> 256 image tokens)")
    p.add_argument("--profile", action="store_true", help="torch.profiler over each run's first timed step: the ops "
                   "with the most device time (the profiler slows that step: its time still counts)")
    p.add_argument("--full-weights", action="store_true", help="train all weights instead of LoRA adapters")
    p.add_argument("--tiny", action="store_true", help="the tiny model (CPU smoke test of the same code path)")
    p.add_argument("--device", default="cuda", help="cuda or cpu")
    p.add_argument("--work", default="/tmp/medbridge-grpo-bench", help="tiny tokenizer/processor dir, TRL output dir")
    p.add_argument("--json-out", default="", help="write the results here as JSON")
    args = p.parse_args(argv)
    import torch

    import components.grpo.care as care

    runs = [parse_run(s.strip()) for s in args.runs.split(",") if s.strip()]
    if args.tiny:
        args.image_size, args.max_new_tokens = 56, min(args.max_new_tokens, 8)
    args.work = Path(args.work)
    args.work.mkdir(parents=True, exist_ok=True)
    hw: dict = {}
    if args.device.startswith("cuda"):
        from benchmarks.labeller import matmul_tflops
        from benchmarks.sampling import measure_bandwidth

        hw = {"gpu": torch.cuda.get_device_name(0), "tflops": matmul_tflops(args.device),
              "bandwidth": measure_bandwidth()}
        print(f"[grpo] {hw['gpu']}, torch {torch.__version__}: bf16 8192^3 matmul {hw['tflops']:.0f} TFLOP/s, "
              f"copy bandwidth {hw['bandwidth'] / 1e12:.2f} TB/s", flush=True)
    elif args.tiny:  # the smoke test exercises the bound arithmetic with nominal H200 figures (meaningless on CPU)
        hw = {"gpu": "none: nominal H200 figures, smoke test only", "tflops": BF16_DENSE_PEAK_TFLOPS,
              "bandwidth": 4.8e12}
    tiny_dir = build_tiny_dir(args.work, args.image_size)
    most = max(r["prompts"] * r["accumulation"] for r in runs) * (args.warmup + args.steps)
    rows = build_rows(most, args.image_size)
    results, skipped = [], []
    real_mask, care.answer_token_mask = care.answer_token_mask, last_tokens_are_the_answer  # see the docstring
    try:
        for spec in runs:
            t0 = time.perf_counter()
            r = run_or_skip_oom(run_one, spec, args, tiny_dir, rows, hw)
            r["run_wall_s"] = time.perf_counter() - t0
            if "skipped" in r:
                print(f"[grpo] {r['run']}: skipped, {r['skipped']}", flush=True)
                skipped.append(r)
                continue
            results.append(r)
            print_run(r)
    finally:
        care.answer_token_mask = real_mask
    stock = next((r for r in results if r["rollout"] == "trl"), None)
    fast = max((r for r in results if r["rollout"] != "trl"), key=lambda r: r["tokens_per_s"], default=None)
    print("\n| run | rows/step | tokens/step | s/step | tokens/s/GPU | x stock | generation | reward+CARE | other "
          "scoring | fwd+bwd | optimizer | rest | of bound | MFU | peak GiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        s = r["split_s"]
        x = f"{r['tokens_per_s'] / stock['tokens_per_s']:.2f}" if stock else ""
        bound = f"{r['step_bound_fraction']:.0%}" if "step_bound_fraction" in r else ""
        mfu = f"{r['mfu_vs_peak']:.1%}" if "mfu_vs_peak" in r else ""
        peak = f"{r['peak_gib']:.1f}" if r.get("peak_gib") else ""
        print(f"| {r['run']} | {r['rows_per_step']} | {r['completion_tokens_per_step']:,.0f} | "
              f"{r['seconds_per_step']:.2f} | {r['tokens_per_s']:,.0f} | {x} | "
              + " | ".join(f"{s[k]:.2f}" for k in StepTimer.PHASES) + f" | {bound} | {mfu} | {peak} |")
    summary = {"stock_tokens_per_s": stock["tokens_per_s"] if stock else None,
               "fast_tokens_per_s": fast["tokens_per_s"] if fast else None, "fast_run": fast["run"] if fast else None}
    if stock and fast:
        summary["speedup"] = fast["tokens_per_s"] / stock["tokens_per_s"]
        summary["targets_met"] = bool(fast["tokens_per_s"] >= TARGET_TOKENS_PER_S and summary["speedup"] >= TARGET_SPEEDUP)
        print(f"\nSUMMARY grpo: {fast['run']} {fast['tokens_per_s']:,.0f} tokens/s per GPU vs stock "
              f"{stock['tokens_per_s']:,.0f} = {summary['speedup']:.2f}x in the same run; targets (>= "
              f"{TARGET_TOKENS_PER_S:,.0f} tokens/s, >= {TARGET_SPEEDUP:.0f}x) "
              f"{'MET' if summary['targets_met'] else 'NOT met'}", flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"hardware": hw, "results": results, "skipped": skipped,
                                                   "summary": summary,
                                                   "args": {k: str(v) for k, v in vars(args).items()}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
