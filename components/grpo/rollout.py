"""How the sharpen step samples its GRPO completions: the `rollout` knob of SharpenConfig.

    trl            TRL's own generation: `model.generate` on every row of the generation batch, so each prompt is
                   prefilled (vision tower included) once per completion, and decoded by HF's per-step Python.
    shared_prefix  the project's sampler (components.common.sampling.shared_prefix_generate) as TRL's rollout engine,
                   through TRL's extension point for custom rollouts, `GRPOTrainer(rollout_func=...)`: each prompt is
                   prefilled ONCE, its KV cache copied into the rows of its group, all rows of the generation batch
                   decoded together (CUDA-graph decode on a GPU, exact top-p, the same suppressed tokens); it returns
                   TRL's prompt ids (its own tokenisation, so the training forward sees exactly these), the completion
                   ids cut after the first end token (as TRL cuts them) and each token's log-probability under the
                   temperature-scaled policy (what TRL's forward computes for it). Everything after (rewards, CARE,
                   advantages, loss, optimizer) stays TRL's.
    vllm           TRL's vLLM colocate mode (`use_vllm=True, vllm_mode="colocate"`): vLLM shares each training GPU
                   (`vllm_gpu_memory_utilization` of its memory) and TRL pushes the policy's weights into it every
                   step. Needs vLLM in the image running the step; the train image does not carry it.

Pure pieces (prompt_runs, prompt_key, cut_at_eos, rollout_trainer_args) are unit-tested; `SharedPrefixRollout` is
tested on CPU against TRL's own generation (same token ids in greedy-like settings) and its log-probabilities against
TRL's forward pass.
"""

from __future__ import annotations

import logging
from typing import Any

from components.common.prompts import digest_once, frozen_messages, image_digest

ROLLOUTS = ("trl", "shared_prefix", "vllm")

log = logging.getLogger(__name__)


def check_rollout(rollout: str) -> None:
    if rollout not in ROLLOUTS:
        raise ValueError(f"rollout={rollout!r} is not known; choose one of {', '.join(ROLLOUTS)}")


def require_rollout_backend(rollout: str) -> None:
    """Bad input found before any model loads: `rollout: vllm` on an image without vLLM."""
    import importlib.util

    if rollout == "vllm" and importlib.util.find_spec("vllm") is None:
        raise ValueError(
            "rollout=vllm needs vLLM, which this image lacks (the train image does not carry it): use rollout: "
            "shared_prefix (the project's sampler, no extra package), or run the step on an image with vLLM "
            "(the serve image's stack)"
        )


def rollout_trainer_args(rollout: str, *, steps_per_generation: int, vllm_gpu_memory_utilization: float) -> dict:
    """The GRPOConfig fields a rollout engine sets (besides `rollout_func`, which is a trainer argument)."""
    check_rollout(rollout)
    args: dict[str, Any] = {"vllm_gpu_memory_utilization": vllm_gpu_memory_utilization}  # read only with use_vllm
    if steps_per_generation:
        args["steps_per_generation"] = steps_per_generation
    if rollout == "vllm":
        args.update(use_vllm=True, vllm_mode="colocate")
    return args


# --- grouping the generation batch into prompts ----------------------------------------------------------------


def prompt_key(prompt: Any) -> Any:
    """Equal for two prompts with the same messages and the same image pixels."""
    return frozen_messages(prompt, image_digest)


def prompt_keys(prompts: list) -> list:
    """`prompt_key` of each prompt, each image object hashed once (a group's G rows share theirs)."""
    digest = digest_once()
    return [frozen_messages(p, digest) for p in prompts]


def prompt_runs(keys: list) -> list[tuple[int, int]]:
    """(start, length) of every run of consecutive equal keys: TRL's sampler puts a prompt's G copies side by side,
    so each run is one prompt's group (or the part of it this process holds)."""
    runs: list[tuple[int, int]] = []
    for i, k in enumerate(keys):
        if runs and keys[runs[-1][0]] == k:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs


def cut_at_eos(seq: list[int], logps: list[float], eos_ids: set[int]) -> tuple[list[int], list[float]]:
    """A completion up to and including its first end token (TRL keeps that token), with its log-probabilities."""
    for i, t in enumerate(seq):
        if t in eos_ids:
            return seq[: i + 1], logps[: i + 1]
    return seq, logps


def left_pad(rows: list[list[int]], value: int) -> tuple[list[list[int]], list[list[int]]]:
    """(padded rows, attention mask), padded on the left to the longest row."""
    width = max(len(r) for r in rows)
    return [[value] * (width - len(r)) + list(r) for r in rows], [[0] * (width - len(r)) + [1] * len(r) for r in rows]


def encode_prompts(trainer, prompts: list, device) -> tuple[dict, list[list[int]]]:
    """Left-padded tensors of `prompts` from TRL's own tokenisation (`_tokenize_prompts`), as TRL's generate gets
    them, and each prompt's token ids."""
    import torch

    prompt_ids, _, fields = trainer._tokenize_prompts(prompts)
    ids, mask = left_pad([list(p) for p in prompt_ids], trainer._tokenizer.pad_token_id)
    enc: dict[str, Any] = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
    for k, v in fields.items():
        if isinstance(v, torch.Tensor):
            enc[k] = v
        elif isinstance(v, list) and v and (isinstance(v[0], (list, tuple)) or hasattr(v[0], "tolist")):
            rows = [x.tolist() if hasattr(x, "tolist") else list(x) for x in v]
            enc[k] = torch.tensor(left_pad(rows, 0)[0])  # a per-token field (mm_token_type_ids)
        else:
            enc[k] = torch.as_tensor(v)
    return {k: v.to(device) for k, v in enc.items()}, [list(p) for p in prompt_ids]


def right_pad(rows: list[list], value) -> tuple[list[list], list[list[int]]]:
    """(padded rows, attention mask), padded on the right to the longest row."""
    width = max(len(r) for r in rows)
    return [list(r) + [value] * (width - len(r)) for r in rows], [[1] * len(r) + [0] * (width - len(r)) for r in rows]


# --- the engine -------------------------------------------------------------------------------------------------


class SharedPrefixRollout:
    """TRL `rollout_func`: `rollout(prompts, trainer) -> {"prompt_ids", "completion_ids", "logprobs"}` for the
    per-process rows of a generation batch (each prompt repeated once per completion, side by side).

    `max_rows`: most rows (prompts x completions) decoded together in one sampler call (bounds the KV cache)."""

    def __init__(self, max_rows: int = 512, seed: int = 0):
        if max_rows < 1:
            raise ValueError(f"max_rows={max_rows} must be >= 1")
        self.max_rows, self.seed = max_rows, seed
        self._step_calls = (-1, 0)  # (optimizer step, rollouts already drawn at it): seeds survive a resume
        self.use_cuda_graph: bool | None = None  # decided on the first call (CUDA device), off after a failure
        self.last: dict[str, Any] = {}  # what the last call did (rows, tokens, prefill/decode seconds): benchmarks

    def _generator(self, trainer, device):
        """A generator seeded by (seed, process, optimizer step, rollout at that step): a resumed run draws what the
        uninterrupted run drew (checkpoints lie on step boundaries), and processes draw independently."""
        import numpy as np
        import torch

        step = trainer.state.global_step
        k = self._step_calls[1] + 1 if self._step_calls[0] == step else 0
        self._step_calls = (step, k)
        state = np.random.SeedSequence([self.seed, trainer.accelerator.process_index, step, k]).generate_state(1)[0]
        return torch.Generator(device=device).manual_seed(int(state))

    def _sample(self, model, enc: dict, n: int, trainer, generator, stats: dict):
        from components.common.sampling import shared_prefix_generate

        suppress = list((getattr(trainer, "generation_kwargs", None) or {}).get("suppress_tokens") or [])
        kwargs = dict(
            n=n, greedy_row=False, max_new_tokens=trainer.max_completion_length, temperature=trainer.temperature,
            top_p=trainer.top_p if trainer.top_p is not None else 1.0, eos_ids=list(trainer.eos_token_ids),
            pad_id=trainer._tokenizer.pad_token_id, suppress_ids=suppress,
            image_token_id=getattr(model.config, "image_token_id", None), generator=generator, stats=stats,
            logprobs=True,
        )
        if self.use_cuda_graph:
            try:
                return shared_prefix_generate(model, dict(enc), cuda_graph=True, **kwargs)
            except RuntimeError as e:  # an op that cannot be captured in this torch/transformers version
                log.warning("CUDA-graph decoding failed (%s); decoding eagerly from now on", e)
                self.use_cuda_graph = False
        return shared_prefix_generate(model, dict(enc), **kwargs)

    def __call__(self, prompts: list, trainer) -> dict[str, list]:
        import contextlib
        import time

        import torch
        from trl.models import unwrap_model_for_generation

        from components.grpo.adapters import adapters_in_compute_dtype, merged_unless_sharded

        for name, value, neutral in (("top_k", trainer.top_k, (None, 0)), ("min_p", trainer.min_p, (None, 0.0)),
                                     ("repetition_penalty", trainer.repetition_penalty, (None, 1.0))):
            if value not in neutral:
                raise ValueError(f"rollout=shared_prefix samples with temperature and top-p only; {name}={value}")
        t0 = time.perf_counter()
        device = trainer.accelerator.device
        if self.use_cuda_graph is None:
            self.use_cuda_graph = device.type == "cuda"
        runs = prompt_runs(prompt_keys(prompts))
        by_size: dict[int, list[int]] = {}  # run length -> runs of that length (one sampler call needs one n)
        for j, (_, n) in enumerate(runs):
            by_size.setdefault(n, []).append(j)
        prompt_ids: list = [None] * len(prompts)
        completion_ids: list = [None] * len(prompts)
        logprobs: list = [None] * len(prompts)
        eos = set(trainer.eos_token_ids)
        generator = self._generator(trainer, device)
        stats_all = {"rows": 0, "prefill_s": 0.0, "decode_s": 0.0, "sampler_calls": 0}
        with (
            contextlib.ExitStack() as stack,
            unwrap_model_for_generation(
                trainer.model_wrapped, trainer.accelerator,
                gather_deepspeed3_params=trainer.args.ds3_gather_for_generation,
                gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs,
            ) as unwrapped,
            torch.no_grad(),
            trainer._dist.summon_full_params(trainer.model_wrapped, recurse=False),
        ):
            # A PEFT model's adapters live inside the base model's layers. Without sharding they are merged into a
            # copy of the base weights for the rollout (one matmul per projection, what a vLLM engine samples with);
            # whatever cannot be merged computes its adapters in the base weights' dtype (components.grpo.adapters).
            model = unwrapped.get_base_model() if hasattr(unwrapped, "get_base_model") else unwrapped
            stack.enter_context(merged_unless_sharded(trainer, model))
            stack.enter_context(adapters_in_compute_dtype(model))
            for n, members in sorted(by_size.items()):
                per_call = max(1, self.max_rows // n)
                for c in range(0, len(members), per_call):
                    chunk = members[c : c + per_call]
                    enc, ids = encode_prompts(trainer, [prompts[runs[j][0]] for j in chunk], device)
                    stats: dict = {}
                    toks, lps = self._sample(model, enc, n, trainer, generator, stats)
                    for key in ("rows", "prefill_s", "decode_s"):
                        stats_all[key] += stats.get(key, 0)
                    stats_all["sampler_calls"] += 1
                    toks, lps = toks.tolist(), lps.tolist()
                    for b, j in enumerate(chunk):
                        start = runs[j][0]
                        for r in range(n):
                            seq, lp = cut_at_eos(toks[b][r], lps[b][r], eos)
                            prompt_ids[start + r], completion_ids[start + r], logprobs[start + r] = ids[b], seq, lp
        self.last = {**stats_all, "prompts": len(runs), "completion_tokens": sum(len(c) for c in completion_ids),
                     "seconds": time.perf_counter() - t0}
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": logprobs}
