"""Consistency-aware GRPO (GRPO-CARE, arXiv 2506.16141) on TRL's own GRPOTrainer.

Imported only inside `components.grpo.train.train_grpo` (it imports torch and trl at module level).

What this implements, through TRL 1.16's extension points (no hand-written training loop):
  * `ConsistencyGRPOTrainer(GRPOTrainer)` overrides one hook, `_calculate_rewards`: after TRL has computed and
    gathered every reward function's column, it scores each completion with the EMA reference model, computes the
    group-relative consistency bonus (`components.grpo.rewards.consistency_bonus`) per group of `num_generations`
    completions of one prompt, and writes it into the column of a registered placeholder reward function named
    `care_consistency_bonus` (so TRL sums it into the reward with weight 1 and logs it as
    `rewards/care_consistency_bonus/mean`). Group normalisation, the loss and everything else stay TRL's.
  * Confidence = exp(mean log-probability of the answer tokens), i.e. the reference model's likelihood of the
    completion's answer given the prompt, the image and the completion's own reasoning; answer tokens are those
    overlapping the last <answer>…</answer> (`answer_token_mask`).
  * The reference is an EMA of the policy: a copy taken when training starts, moved towards the policy every
    `ema_every` optimizer steps with TRL's `SyncRefModelCallback.sync_target_model` (alpha = 1 - decay; it also
    handles ZeRO-3 gathering). Public settings: decay 0.995, every 10 steps, bonus 0.5, confidence upper bound 0.95,
    consistency margin 0.01, KL beta 0.

Differences from the authors' code (TencentARC/GRPO-CARE, `grpo_trainer_ref_ema.py`), stated for audits:
  * They select "high-accuracy" completions against the mean accuracy of the device batch (one prompt x 8
    generations per device in their runs); we use each prompt's group after TRL gathers all processes, which is the
    same set in their setting and stays correct when TRL spreads one group over several GPUs.
  * Their answer span runs from the `<answer>` token to three tokens before EOS; ours is the tokens overlapping the
    answer text, found from decoded token strings (tokenizer independent).
  * With LoRA only the adapters move (the base weights are frozen), so the EMA is kept as fp32 copies of the adapters
    (`components.grpo.adapters.AdapterEMA`) and the reference scores with the policy's own base weights and those
    adapters swapped in, instead of a second copy of the model; the authors trained full weights. LoRA together with
    DeepSpeed ZeRO-3 is refused (no copy of sharded weights).
  * Their reference forward uses the policy's vision inputs re-processed with `qwen_vl_utils`; ours re-tokenises the
    prompt with TRL's own `_tokenize_prompts`, so the reference sees exactly the policy's inputs.
"""

from __future__ import annotations

import contextlib
import copy
import functools

import torch
from trl import GRPOTrainer
from trl.trainer.callbacks import SyncRefModelCallback
from transformers import TrainerCallback

from components.common.vision_attention import is_batched_window_attention
from components.grpo.adapters import AdapterEMA, adapters_in_compute_dtype, merged_unless_sharded
from components.grpo.prompt_once import PromptOnceMixin
from components.grpo.rewards import answer_token_mask, consistency_bonus, ema_alpha, mean_probability

BONUS_FUNC_NAME = "care_consistency_bonus"


def care_consistency_bonus(completions, **kwargs) -> list[float]:
    """Placeholder column for the consistency bonus: ConsistencyGRPOTrainer fills it once the groups are gathered."""
    return [0.0] * len(completions)


def _strip_forward_patches(module: torch.nn.Module) -> None:
    """Remove per-instance `forward` overrides (TRL's fused LM head, accelerate's autocast wrapper) from a copy, so
    its forward is the model class's own and never calls back into the module it was copied from."""
    for m in module.modules():
        if is_batched_window_attention(m):  # the copy's own batched vision attention (deepcopy rebinds it)
            continue
        m.__dict__.pop("forward", None)
        m.__dict__.pop("_original_forward", None)


class EMAReferenceCallback(TrainerCallback):
    """Every `every` optimizer steps: reference <- decay * reference + (1 - decay) * policy."""

    def __init__(self, trainer: "ConsistencyGRPOTrainer", decay: float, every: int):
        self.trainer, self.alpha, self.every = trainer, ema_alpha(decay), every
        self.updates = 0

    def on_step_end(self, args, state, control, **kwargs):
        if self.every > 0 and state.global_step % self.every == 0:
            policy = self.trainer.accelerator.unwrap_model(self.trainer.model)
            if self.trainer._shares_policy:
                self.trainer.ema_model.update(policy, self.alpha)
            else:
                SyncRefModelCallback.sync_target_model(policy, self.trainer.ema_model, self.alpha)
            self.updates += 1
        return control


def _chunks(runs: list[tuple[int, int]], lengths: list[int], budget: int) -> list[list[tuple[int, int]]]:
    """Groups `runs` (start, completions) into chunks of at most `budget` completion rows x longest completion
    tokens (a run larger than the budget is a chunk of its own)."""
    chunks: list[list[tuple[int, int]]] = []
    rows = longest = 0
    for run, length in zip(runs, lengths, strict=True):
        if chunks and (rows + run[1]) * max(longest, length) <= budget:
            chunks[-1].append(run)
            rows, longest = rows + run[1], max(longest, length)
        else:
            chunks.append([run])
            rows, longest = run[1], length
    return chunks


class MedBridgeGRPOTrainer(PromptOnceMixin, GRPOTrainer):
    """TRL's GRPOTrainer whose policy forward computes each group's prompt once when it can
    (`components.grpo.prompt_once`; `enable_prompt_once` after construction), and whose rollout batch prepares each
    image once (`ImageQwenVLProcessor.reusing_images`: the rollout, CARE's reference and TRL's forward inputs all
    prepare the same images), kept on the trainer's device so that a prompt's G copies are laid out there."""

    def _generate_and_score_completions(self, inputs):
        reuse = getattr(self.processing_class, "reusing_images", None)
        with reuse(device=self.accelerator.device) if reuse is not None else contextlib.nullcontext():
            return super()._generate_and_score_completions(inputs)


class ConsistencyGRPOTrainer(MedBridgeGRPOTrainer):
    """TRL GRPOTrainer plus GRPO-CARE's EMA reference and consistency bonus (see module docstring)."""

    care_tokens = 65536  # reference scoring: completion rows x longest completion per forward

    def __init__(
        self,
        *args,
        reward_funcs,
        accuracy_func_name: str = "accuracy_reward",
        bonus: float = 0.5,
        upper_bound: float | None = 0.95,
        margin: float | None = 0.01,
        ema_decay: float = 0.995,
        ema_every: int = 10,
        shared_prefix_scoring: bool = True,
        **kwargs,
    ):
        reward_funcs = [*reward_funcs, care_consistency_bonus]
        train_args = kwargs.get("args")
        if train_args is not None and train_args.reward_weights is not None:
            train_args.reward_weights = [*train_args.reward_weights, 1.0]
        super().__init__(*args, reward_funcs=reward_funcs, **kwargs)
        if accuracy_func_name not in self.reward_func_names:
            raise ValueError(
                f"GRPO-CARE needs the accuracy reward {accuracy_func_name!r} among the reward functions "
                f"{self.reward_func_names}; pass it or set accuracy_func_name"
            )
        self._acc_idx = self.reward_func_names.index(accuracy_func_name)
        self._bonus_idx = self.reward_func_names.index(BONUS_FUNC_NAME)
        self.care = {"bonus": bonus, "upper_bound": upper_bound, "margin": margin}
        # Under ZeRO-3 every process must call the sharded reference equally often, which one forward per completion
        # guarantees; the shared-prefix scoring's call count follows the prompts a process holds.
        self.shared_prefix_scoring = shared_prefix_scoring and not self.is_deepspeed_enabled
        self.ema_model = self._build_ema_model()
        self.ema_callback = EMAReferenceCallback(self, ema_decay, ema_every)
        self.add_callback(self.ema_callback)

    @property
    def _shares_policy(self) -> bool:
        return isinstance(self.ema_model, AdapterEMA)

    def _build_ema_model(self):
        from trl.models import prepare_deepspeed
        from trl.trainer.utils import create_model_from_path, get_config_model_id

        policy = self.accelerator.unwrap_model(self.model)
        if self.is_deepspeed_enabled:
            if hasattr(policy, "peft_config"):
                raise ValueError(
                    "GRPO-CARE with LoRA under DeepSpeed ZeRO-3 is not supported (the EMA reference cannot copy "
                    "sharded adapter weights); set lora: false or deepspeed: false"
                )
            # device_map=None: TRL's default ("auto" on a GPU) is refused under ZeRO-3, whose zero.Init places the
            # shards itself.
            ema = create_model_from_path(get_config_model_id(policy.config), dtype=policy.dtype, device_map=None)
            ema = prepare_deepspeed(ema, self.accelerator)
        elif hasattr(policy, "peft_config"):
            return AdapterEMA(policy)  # only the adapters move: the reference shares the policy's frozen base weights
        else:
            ema = copy.deepcopy(policy)
            _strip_forward_patches(ema)
        ema.eval()
        for p in ema.parameters():
            p.requires_grad_(False)
        return ema

    @contextlib.contextmanager
    def _reference(self):
        """The model CARE's reference scores with: the policy with the EMA's adapters swapped in and merged into a
        copy of its base weights (LoRA), or the EMA copy (full weights, any adapters of its own in bf16)."""
        if self._shares_policy:
            policy = self.accelerator.unwrap_model(self.model)
            with self.ema_model.applied(policy), merged_unless_sharded(self, policy):
                yield policy.get_base_model()
        else:
            ema = self.ema_model.get_base_model() if hasattr(self.ema_model, "get_base_model") else self.ema_model
            with adapters_in_compute_dtype(ema):
                yield ema

    @torch.no_grad()
    def _reference_confidence(self, prompts, completion_ids_list) -> torch.Tensor:
        """Per completion: exp(mean log p_ref(answer token | prompt, image, preceding completion tokens))."""
        if self.shared_prefix_scoring:
            return self._reference_confidence_shared(prompts, completion_ids_list)
        return self._reference_confidence_each(prompts, completion_ids_list)

    @torch.no_grad()
    def _reference_confidence_shared(self, prompts, completion_ids_list) -> torch.Tensor:
        """The same confidences, each group's prompt run once (vision tower included) and all completions of a
        chunk of groups scored together over copies of their prompt's keys/values, the LM head only at answer
        tokens (`components.grpo.prompt_once.prompt_once_logps`; equal to `_reference_confidence_each`, tested)."""
        from components.grpo.prompt_once import prompt_once_logps
        from components.grpo.rollout import encode_prompts, prompt_keys, prompt_runs, right_pad

        tok = self._tokenizer
        device = self.accelerator.device
        out = [0.0] * len(prompts)
        comps = [list(c) or [tok.pad_token_id or 0] for c in completion_ids_list]
        masks = [answer_token_mask(tok.batch_decode([[t] for t in c])) for c in comps]  # decode([t]) per token
        runs = [(s, n) for s, n in prompt_runs(prompt_keys(prompts))
                if any(any(m) for m in masks[s : s + n])]
        with self._reference() as ema:
            for chunk in _chunks(runs, [max(len(c) for c in comps[s : s + n]) for s, n in runs], self.care_tokens):
                enc, _ = encode_prompts(self, [prompts[s] for s, _ in chunk], device)
                prompt = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "pixel_values",
                                                                 "image_grid_thw", "mm_token_type_ids")}
                rows = [r for s, n in chunk for r in range(s, s + n)]
                group_index = [g for g, (_, n) in enumerate(chunk) for _ in range(n)]
                ids, cmask = right_pad([comps[r] for r in rows], tok.pad_token_id or 0)
                ids, cmask = torch.tensor(ids, device=device), torch.tensor(cmask, device=device)
                keep = torch.tensor(right_pad([masks[r] for r in rows], False)[0], device=device)
                logps, _ = prompt_once_logps(ema, prompt, group_index, ids, cmask, score_mask=keep)
                for i, r in enumerate(rows):
                    if any(masks[r]):
                        out[r] = mean_probability(logps[i][keep[i]].tolist())
        return torch.tensor(out, dtype=torch.float32, device=device)

    @torch.no_grad()
    def _reference_confidence_each(self, prompts, completion_ids_list) -> torch.Tensor:
        """One reference forward of prompt + completion per completion (TRL's tokenisation of each prompt)."""
        tok = self._tokenizer
        device = self.accelerator.device
        out = []
        with self._reference() as ref:
            # the class's own forward: the policy's instance carries TRL's and the prompt-once forward patches
            forward = functools.partial(type(ref).forward, ref) if self._shares_policy else ref
            for prompt, comp_ids in zip(prompts, completion_ids_list, strict=True):
                comp_ids = list(comp_ids) or [tok.pad_token_id or 0]
                mask = answer_token_mask([tok.decode([t]) for t in comp_ids])
                # The forward runs even without an answer to score: under ZeRO-3 every process must call the sharded
                # reference the same number of times (each call gathers weights from all of them).
                prompt_ids, _, mm = self._tokenize_prompts([prompt])
                ids = torch.tensor([list(prompt_ids[0]) + comp_ids], device=device)
                kwargs = {}
                for k, v in mm.items():
                    v = torch.as_tensor(v) if not isinstance(v, torch.Tensor) else v
                    if k in ("token_type_ids", "mm_token_type_ids"):
                        v = torch.cat([v.reshape(1, -1), v.new_zeros((1, len(comp_ids)))], dim=1)
                    kwargs[k] = v.to(device)
                logits = forward(
                    input_ids=ids, attention_mask=torch.ones_like(ids), logits_to_keep=len(comp_ids) + 1, **kwargs
                ).logits[0, :-1].float()
                logps = torch.log_softmax(logits, dim=-1).gather(1, ids[0, -len(comp_ids) :, None]).squeeze(1)
                out.append(mean_probability([lp for lp, m in zip(logps.tolist(), mask) if m]) if any(mask) else 0.0)
        return torch.tensor(out, dtype=torch.float32, device=device)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        from accelerate.utils import gather

        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        confidence = gather(self._reference_confidence(prompts, completion_ids_list))
        mode = "train" if self.model.training else "eval"
        group = self.num_generations if mode == "train" else self.num_generations_eval
        acc = rewards_per_func[:, self._acc_idx].nan_to_num(0.0)
        bonus: list[float] = []
        for a_g, c_g in zip(acc.view(-1, group).tolist(), confidence.view(-1, group).tolist(), strict=True):
            bonus += consistency_bonus(a_g, c_g, **self.care)
        rewards_per_func[:, self._bonus_idx] = torch.tensor(bonus, dtype=rewards_per_func.dtype, device=acc.device)
        self._metrics[mode]["care/reference_confidence"].append(confidence.mean().item())
        return rewards_per_func
