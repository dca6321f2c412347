"""Each group's prompt computed once in the policy's forward and backward, not once per completion.

A GRPO micro-batch holds G completions of each prompt side by side, and TRL's forward runs every row over
prompt + completion: the prompt (often most of the row: a 408-token prompt with its image against ~150 completion
tokens) and the vision tower run G times, and so does their backward. Here the rows of a micro-batch are grouped by
prompt (equal prompt tokens, mask and image pixels), each group's prompt runs once (vision tower included) with its
keys/values kept in the autograd graph, and all completions run together over copies of their group's keys/values
(`index_select`, whose backward sums the G completions' gradients into the one prompt: what the G separate copies'
gradients add up to in TRL's forward). Log-probabilities and entropies come from TRL's own chunked LM head
(`trl.kernels.ChunkedLogProbFunction`, the kernel behind TRL's `fused_lm_head`), so the numbers are TRL's.

    group_rows(...)                  which rows share a prompt (pure, tested)
    prompt_once_logps(model, ...)    the forward from prompt-level inputs (the CARE reference scores with it too)
    add_prompt_once_forward(model)   `model(..., prompt_once=plan)` routes to it through DDP / PEFT wrappers

Equal to TRL's forward, per token and in the LoRA gradients, on CPU in fp32 (tests/unit/grpo/test_grpo_prompt_once.py).
Used when gradient checkpointing is off (transformers drops the cache under checkpointing) and DeepSpeed is off; the
trainer falls back to TRL's forward otherwise, and for text-only or non-Qwen2.5-VL inputs.
"""

from __future__ import annotations

import functools
import logging
import types
from dataclasses import dataclass

from components.common.modeling import image_starts, pixel_row_spans

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptGroups:
    """`group_index[r]`: the group of row r; `reps[g]`: the row whose prompt stands for group g."""

    group_index: list[int]
    reps: list[int]

    @property
    def n_groups(self) -> int:
        return len(self.reps)


def group_rows(prompt_ids, prompt_mask, pixel_values=None, spans: list[tuple[int, int]] | None = None) -> PromptGroups:
    """Consecutive rows with equal prompt tokens, equal mask and equal image pixels form one group (TRL puts a
    prompt's completions side by side; equal prompts apart from each other stay separate groups, which is only
    slower, never wrong)."""
    import torch

    group_index: list[int] = []
    reps: list[int] = []
    for r in range(prompt_ids.shape[0]):
        if reps:
            q = reps[-1]
            same = torch.equal(prompt_ids[r], prompt_ids[q]) and torch.equal(prompt_mask[r], prompt_mask[q])
            if same and pixel_values is not None:
                (a, b), (c, d) = spans[r], spans[q]
                same = b - a == d - c and torch.equal(pixel_values[a:b], pixel_values[c:d])
            if same:
                group_index.append(len(reps) - 1)
                continue
        reps.append(r)
        group_index.append(len(reps) - 1)
    return PromptGroups(group_index, reps)


class _GroupPrefixCache:
    """The prompt forward's keys/values, handed to each completion row of its group (`index_select`: differentiable),
    followed by the completion's own. What the text model calls of a cache; nothing is stored between calls."""

    is_compileable = False

    def __init__(self, prompt_cache, group_index):
        from components.common.sampling import _cache_tensors

        self.prefix = _cache_tensors(prompt_cache)
        self.group_index = group_index
        self.length = self.prefix[0][0].shape[-2]

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        import torch

        k, v = self.prefix[layer_idx]
        return (torch.cat([k.index_select(0, self.group_index), key_states], dim=2),
                torch.cat([v.index_select(0, self.group_index), value_states], dim=2))

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length


def _lm_head_scores(model, hidden, labels, *, temperature: float, outputs: tuple[str, ...], cast_fp32: bool):
    """TRL's chunked LM head on the labelled positions: (log_probs, entropy or None), each (rows, length), 0 elsewhere."""
    import contextlib

    import torch
    from trl.kernels import ChunkedLogProbFunction

    text_config = model.config.get_text_config()
    lm_head = model.get_output_embeddings()
    mask = labels != -100
    h = hidden[mask].to(lm_head.weight.device)
    ctx = contextlib.nullcontext()
    if cast_fp32:
        h = h.float()
        ctx = torch.autocast(h.device.type, enabled=False)
    with ctx:
        per_token = ChunkedLogProbFunction.apply(
            h, lm_head.weight, lm_head.bias, labels[mask], temperature, 32768,
            getattr(text_config, "final_logit_softcapping", None), getattr(text_config, "logit_scale", None) or 1.0,
            outputs,
        )
    log_probs, entropy = per_token[0], per_token[1]
    log_probs = log_probs.new_zeros(mask.shape).masked_scatter(mask, log_probs)
    if entropy is not None:
        entropy = entropy.new_zeros(mask.shape).masked_scatter(mask, entropy)
    return log_probs, entropy


def prompt_once_logps(
    model,
    prompt: dict,
    group_index,
    completion_ids,
    completion_mask,
    *,
    temperature: float = 1.0,
    entropy: bool = False,
    cast_lm_head_to_fp32: bool = False,
    score_mask=None,
):
    """Per-token log-probabilities (and entropies) of `completion_ids` (R, C; right-padded, `completion_mask`) under
    `model` (a Qwen2.5-VL ForConditionalGeneration, PEFT adapters inside it apply), each row continuing the prompt
    `group_index[r]` of `prompt` (G left-padded prompts: input_ids, attention_mask, pixel_values, image_grid_thw,
    optionally mm_token_type_ids). Gradients flow when grad is enabled. `score_mask` (R, C) limits the LM head to
    those positions (others are 0). Returns (log_probs (R, C), entropy (R, C) or None)."""
    import torch

    ids, pmask = prompt["input_ids"], prompt["attention_mask"]
    if prompt.get("pixel_values") is None or prompt.get("image_grid_thw") is None:
        raise ValueError("prompt_once_logps needs image prompts (pixel_values and image_grid_thw); use the full forward")
    dev = ids.device
    gi = torch.as_tensor(group_index, dtype=torch.long, device=dev)
    rows, length = completion_ids.shape
    width = ids.shape[1]
    inner = model.model
    kwargs = {k: v for k, v in prompt.items() if k not in ("input_ids", "attention_mask")}
    image_token_id = getattr(model.config, "image_token_id", None)
    if kwargs.get("mm_token_type_ids") is None and image_token_id is not None:
        kwargs["mm_token_type_ids"] = (ids == image_token_id).int()
    inner.rope_deltas = None  # positions of this batch, not of an earlier call
    out = inner(input_ids=ids, attention_mask=pmask, use_cache=True, **kwargs)
    delta = inner.rope_deltas
    delta = delta.reshape(-1).to(dev) if delta is not None else torch.zeros(ids.shape[0], dtype=torch.long, device=dev)
    inner.rope_deltas = None
    # Completion token j of row r sits at text position (real prompt tokens + rope delta + j), as in the full forward
    # (Qwen2.5-VL's get_rope_index continues text after the image from its largest position).
    start = (pmask.sum(dim=1).long() + delta)[gi]
    pos = (start[:, None] + torch.arange(length, device=dev)[None]).unsqueeze(0).expand(3, -1, -1)
    attend = torch.ones((rows, 1, length, width + length), dtype=torch.bool, device=dev)
    attend[:, 0, :, :width] = pmask.bool()[gi][:, None, :]
    attend[:, 0, :, width:] = torch.ones((length, length), dtype=torch.bool, device=dev).tril()
    hidden = inner.language_model(
        input_ids=completion_ids,
        attention_mask={"full_attention": attend, "sliding_attention": attend},
        position_ids=pos,
        past_key_values=_GroupPrefixCache(out.past_key_values, gi),
        use_cache=True,
    ).last_hidden_state
    # Token 0 is predicted at the prompt's last position (left padding: the last column), token j at j - 1.
    hidden = torch.cat([out.last_hidden_state[:, -1:].index_select(0, gi), hidden[:, :-1]], dim=1)
    keep = completion_mask.bool() if score_mask is None else completion_mask.bool() & score_mask.bool()
    labels = completion_ids.masked_fill(~keep, -100)
    outputs = ("log_probs", "entropy") if entropy else ("log_probs",)
    return _lm_head_scores(model, hidden, labels, temperature=temperature, outputs=outputs,
                           cast_fp32=cast_lm_head_to_fp32)


def rows_to_prompts(plan: PromptGroups, input_ids, attention_mask, logits_to_keep: int, pixel_values, image_grid_thw,
                    num_images: list[int] | None = None, mm_token_type_ids=None) -> dict:
    """The prompt-level inputs of `prompt_once_logps` from TRL's row-level batch (prompt = all but the last
    `logits_to_keep` columns)."""
    import torch

    width = input_ids.shape[1] - logits_to_keep
    reps = torch.as_tensor(plan.reps, dtype=torch.long, device=input_ids.device)
    spans = pixel_row_spans(image_grid_thw, num_images, input_ids.shape[0])
    counts = num_images if num_images is not None else [1] * input_ids.shape[0]
    first = image_starts(counts)
    prompt = {
        "input_ids": input_ids[reps, :width],
        "attention_mask": attention_mask[reps, :width],
        "pixel_values": torch.cat([pixel_values[spans[r][0] : spans[r][1]] for r in plan.reps]),
        "image_grid_thw": torch.cat([image_grid_thw[first[r] : first[r] + counts[r]] for r in plan.reps]),
    }
    if mm_token_type_ids is not None:
        prompt["mm_token_type_ids"] = mm_token_type_ids[reps, :width]
    return prompt


def add_prompt_once_forward(model, *, temperature: float, cast_lm_head_to_fp32: bool = False) -> None:
    """Patch `model` (after TRL's fused LM head, before PEFT) so that `model(..., prompt_once=plan)` with TRL's
    row-level keyword arguments returns {"log_probs", "entropy"} from `prompt_once_logps`; without `prompt_once` the
    forward is the one it had. Going through `model(...)` keeps DDP's and PEFT's wrappers in the loop."""
    previous = model.forward

    @functools.wraps(type(model).forward)
    def forward(self, *args, prompt_once: PromptGroups | None = None, **kwargs):
        if prompt_once is None:
            return previous(*args, **kwargs)
        c = kwargs["logits_to_keep"]
        prompt = rows_to_prompts(prompt_once, kwargs["input_ids"], kwargs["attention_mask"], c,
                                 kwargs["pixel_values"], kwargs["image_grid_thw"], kwargs.get("num_images"),
                                 kwargs.get("mm_token_type_ids"))
        log_probs, ent = prompt_once_logps(
            self, prompt, prompt_once.group_index, kwargs["input_ids"][:, -c:], kwargs["attention_mask"][:, -c:],
            temperature=temperature, entropy=kwargs.get("compute_entropy", False),
            cast_lm_head_to_fp32=cast_lm_head_to_fp32,
        )
        return {"log_probs": log_probs, "entropy": ent}

    model.forward = types.MethodType(forward, model)


def group_permutation(prompt_ids, generator=None) -> list[int]:
    """A random order of the rows that keeps each run of consecutive rows with equal prompt tokens together (a
    prompt's G completions, side by side as TRL's sampler puts them) and shuffles the runs."""
    import torch

    from components.grpo.rollout import prompt_runs

    runs = prompt_runs([tuple(r) for r in prompt_ids.tolist()])
    return [i for j in torch.randperm(len(runs), generator=generator).tolist()
            for i in range(runs[j][0], runs[j][0] + runs[j][1])]


def permute_rows(batch: dict, order: list[int]) -> dict:
    """`batch` (TRL's generation batch: tensors and lists with one entry per row, scalars) in row order `order`."""
    import torch

    index = torch.tensor(order)

    def permute(v):
        if v is None or (isinstance(v, torch.Tensor) and v.ndim == 0):
            return v
        if isinstance(v, torch.Tensor):
            return v[index.to(v.device)]
        return [v[i] for i in order]

    return {k: permute(v) for k, v in batch.items()}


class PromptOnceMixin:
    """For a GRPOTrainer subclass: `_get_per_token_logps_and_entropies` through `prompt_once_logps` when
    `self.prompt_once` (set by `enable_prompt_once`) and the batch is a Qwen2.5-VL image batch; TRL's otherwise.

    It also keeps each prompt's completions in one micro-batch: TRL shuffles the rows of a rollout batch before it
    cuts it into `steps_per_generation` micro-batches, which scatters a group over the micro-batches (with 32
    prompts x 8 rows cut into 16-row micro-batches, ~12 distinct prompts per micro-batch instead of 2), so there
    would be little prompt left to compute once. With the prompt-once forward on, `_prepare_inputs` shuffles whole
    groups instead (`group_permutation`). When a rollout batch serves one optimizer step (the recipes), the summed
    gradient does not depend on how its rows are dealt into micro-batches (TRL's default `dapo` loss divides by the
    whole rollout batch's token count; `bnpo` would divide by each micro-batch's); with several optimizer steps per
    rollout batch, which groups fall into which step is still random."""

    prompt_once = False
    prompt_once_why = "off"

    def _prepare_inputs(self, generation_batch):
        """TRL's `_prepare_inputs` (train mode: generate every `steps_per_generation` micro-steps, shuffle, cut, serve
        the pieces) with the groups kept whole when the prompt-once forward is on."""
        if not (self.prompt_once and self.model.training):
            return super()._prepare_inputs(generation_batch)
        from trl.trainer.utils import split_pixel_values_by_grid, split_tensor_dict, unsplit_pixel_values_by_grid

        generate_every = self.args.steps_per_generation * self.num_iterations
        if self._step % generate_every == 0 or self._buffered_inputs is None:
            batch = split_pixel_values_by_grid(self._generate_and_score_completions(generation_batch))
            batch = permute_rows(batch, group_permutation(batch["prompt_ids"]))
            self._buffered_inputs = [unsplit_pixel_values_by_grid(b)
                                     for b in split_tensor_dict(batch, self.args.steps_per_generation)]
        return self._buffered_inputs[self._step % self.args.steps_per_generation]

    def enable_prompt_once(self, wanted: bool) -> None:
        model = self.accelerator.unwrap_model(self.model)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        why = None
        if not wanted:
            why = "off in the recipe (shared_prompt_forward: false)"
        elif self.args.gradient_checkpointing:
            why = "gradient checkpointing is on (transformers drops the prompt's cache under checkpointing)"
        elif self.is_deepspeed_enabled:
            why = "DeepSpeed is on (the two-part forward is not tested under ZeRO-3's parameter partitioning)"
        elif not (hasattr(base, "model") and hasattr(base.model, "language_model") and hasattr(base.model, "rope_deltas")):
            why = f"{type(base).__name__} is not a Qwen2.5-VL-style model"
        self.prompt_once, self.prompt_once_why = why is None, why or "on"
        if self.prompt_once and not getattr(base, "_prompt_once_forward", False):
            add_prompt_once_forward(base, temperature=self.temperature,
                                    cast_lm_head_to_fp32=self.args.cast_lm_head_to_fp32)
            base._prompt_once_forward = True

    def _prompt_once_refusal(self, compute_aux_loss, pixel_values, image_grid_thw, kwargs) -> str | None:
        """Why this batch takes TRL's forward (None: it takes the prompt-once one)."""
        if not self.prompt_once:
            return self.prompt_once_why
        if compute_aux_loss:
            return "the model returns an auxiliary (MoE) loss"
        if pixel_values is None or image_grid_thw is None:
            return "a batch without images"
        # token_type_ids / mm_token_type_ids: the prompt forward derives the image-token types itself.
        extra = sorted(k for k, v in kwargs.items() if v is not None and k not in ("mm_token_type_ids", "token_type_ids"))
        return f"inputs it does not handle: {', '.join(extra)}" if extra else None

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, pixel_values=None,
                                           image_grid_thw=None, num_images=None, **kwargs):
        why = self._prompt_once_refusal(compute_aux_loss, pixel_values, image_grid_thw, kwargs)
        calls = self.__dict__.setdefault("prompt_once_calls", {})  # forward calls by path: logs and benchmarks
        key = "prompt once" if why is None else f"TRL's: {why}"
        if self.prompt_once and why is not None and key not in calls:
            log.warning("policy forward: TRL's for this batch (%s)", why)
        calls[key] = calls.get(key, 0) + 1
        if why is not None:
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, pixel_values=pixel_values,
                image_grid_thw=image_grid_thw, num_images=num_images, **kwargs)
        import torch

        from components.grpo.adapters import adapter_inputs_uncast

        mm = kwargs.get("mm_token_type_ids")
        batch_size = batch_size or input_ids.size(0)
        counts = num_images if num_images is not None else [1] * input_ids.size(0)
        spans = pixel_row_spans(image_grid_thw, counts, input_ids.size(0))
        first = image_starts(counts)
        logps, ents = [], []
        width = input_ids.size(1) - logits_to_keep
        for start in range(0, input_ids.size(0), batch_size):
            end = min(start + batch_size, input_ids.size(0))
            pv = pixel_values[spans[start][0] : spans[end - 1][1]]
            sub_spans = [(a - spans[start][0], b - spans[start][0]) for a, b in spans[start:end]]
            plan = group_rows(input_ids[start:end, :width], attention_mask[start:end, :width], pv, sub_spans)
            with self.accelerator.autocast(), adapter_inputs_uncast(model, input_ids.device.type):
                out = model(input_ids=input_ids[start:end], attention_mask=attention_mask[start:end],
                            logits_to_keep=logits_to_keep, pixel_values=pv,
                            image_grid_thw=image_grid_thw[first[start] : first[end]], num_images=counts[start:end],
                            mm_token_type_ids=None if mm is None else mm[start:end], compute_entropy=compute_entropy,
                            prompt_once=plan)
            logps.append(out["log_probs"])
            if compute_entropy:
                ents.append(out["entropy"])
        return torch.cat(logps), (torch.cat(ents) if compute_entropy else None), None
