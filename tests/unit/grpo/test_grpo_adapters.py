"""LoRA adapters in the base model's dtype for no-gradient passes (components.grpo.adapters)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from components.grpo.adapters import adapters_in_compute_dtype
from tests.unit.grpo.test_grpo_rollout import _prompts, _rows, _trainer, peaked_dir  # noqa: F401  (fixture)


def _lora(tiny_model_dir, dtype, targets=("q_proj", "v_proj", "down_proj"), seed=1, **config):
    """The tiny model in `dtype` with LoRA adapters (PEFT keeps them fp32) whose B is not zero."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2_5_VLForConditionalGeneration

    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(tiny_model_dir), dtype=dtype)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=list(targets), **config))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


@pytest.fixture
def bf16_lora(tiny_model_dir):
    return _lora(tiny_model_dir, torch.bfloat16, targets=("q_proj", "v_proj"), seed=0)


def _adapters(model):
    return {n: p for n, p in model.named_parameters() if "lora_" in n}


def test_adapters_are_bf16_inside_and_fp32_unchanged_after(bf16_lora):
    before = {n: (p, p.detach().clone()) for n, p in _adapters(bf16_lora).items()}
    assert before and all(p.dtype == torch.float32 for p, _ in before.values())
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        ref = bf16_lora(input_ids=ids).logits.float()
        with adapters_in_compute_dtype(bf16_lora) as n:
            assert n == len(before)
            assert all(p.dtype == torch.bfloat16 for p in _adapters(bf16_lora).values())
            got = bf16_lora(input_ids=ids).logits.float()
        base_only = None
        with bf16_lora.disable_adapter():
            base_only = bf16_lora(input_ids=ids).logits.float()
    # the adapters still act (the output is not the base model's) and agree with the fp32 ones to bf16 rounding
    assert (got - base_only).abs().max() > 10 * (got - ref).abs().max()
    torch.testing.assert_close(got, ref, rtol=0.05, atol=0.05)
    for n, p in _adapters(bf16_lora).items():
        assert p is before[n][0] and p.dtype == torch.float32
        assert torch.equal(p.detach(), before[n][1])  # bit for bit: the copies never touched the real weights


def test_gradients_survive_and_grad_mode_is_refused(bf16_lora):
    ids = torch.tensor([[5, 6, 7]])
    bf16_lora(input_ids=ids).logits.float().sum().backward()
    grads = {n: p.grad.clone() for n, p in _adapters(bf16_lora).items() if p.grad is not None}
    assert grads
    with pytest.raises(RuntimeError, match="torch.no_grad"):
        with adapters_in_compute_dtype(bf16_lora):
            pass
    with torch.no_grad(), adapters_in_compute_dtype(bf16_lora):
        bf16_lora(input_ids=ids)
    for n, p in _adapters(bf16_lora).items():
        if n in grads:
            assert p.grad.dtype == torch.float32 and torch.equal(p.grad, grads[n])


def test_a_model_without_adapters_is_left_alone(tiny_model_dir):
    from transformers import Qwen2_5_VLForConditionalGeneration

    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(tiny_model_dir), dtype=torch.bfloat16)
    with torch.no_grad(), adapters_in_compute_dtype(base) as n:
        assert n == 0
    # nor a module that is no model at all (under ZeRO-3 the reference is a DeepSpeed engine: no input embeddings)
    with torch.no_grad(), adapters_in_compute_dtype(torch.nn.Sequential(torch.nn.Linear(2, 2))) as n:
        assert n == 0


def test_uncast_adapter_inputs_change_nothing_under_autocast(bf16_lora):
    """Logits and LoRA gradients bit for bit equal with and without PEFT's input cast, under (CPU) autocast."""
    from components.grpo.adapters import adapter_inputs_uncast

    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    results = []
    for uncast in (False, True):
        bf16_lora.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16), contextlib.ExitStack() as stack:
            if uncast:
                stack.enter_context(adapter_inputs_uncast(bf16_lora, "cpu"))
                assert not any(getattr(m, "cast_input_dtype_enabled", True) for m in bf16_lora.modules()
                               if hasattr(m, "lora_A"))  # active under autocast
            logits = bf16_lora(input_ids=ids).logits
        (logits.float() ** 2).mean().backward()
        results.append((logits.detach(), {n: p.grad.clone() for n, p in _adapters(bf16_lora).items()}))
    (la, ga), (lb, gb) = results
    assert torch.equal(la, lb)
    assert ga.keys() == gb.keys() and all(torch.equal(ga[n], gb[n]) for n in ga)
    assert any(g.abs().sum() > 0 for g in gb.values())
    # outside autocast it is inactive: the fp32 adapters still get fp32 inputs (else the matmul would fail)
    with torch.no_grad(), adapter_inputs_uncast(bf16_lora, "cpu"):
        bf16_lora(input_ids=ids)


def test_adapter_ema_scores_as_a_deep_copy_ema_would(peaked_dir, tmp_path):  # noqa: F811
    """CARE's LoRA reference (AdapterEMA on the policy's base weights) gives the confidences of the deep-copy EMA it
    replaces, after the policy moved and both references took an EMA step; the policy is left as it was."""
    import copy

    from trl.trainer.callbacks import SyncRefModelCallback

    from components.grpo.adapters import AdapterEMA
    from components.grpo.care import _strip_forward_patches

    trainer = _trainer(peaked_dir, tmp_path, consistency_bonus=0.5, lora=True)
    policy = trainer.accelerator.unwrap_model(trainer.model)
    assert isinstance(trainer.ema_model, AdapterEMA)
    assert sum(p.numel() for p in trainer.ema_model.parameters()) < 0.2 * sum(p.numel() for p in policy.parameters())
    deep = copy.deepcopy(policy)  # what the reference was before: a copy of the whole PEFT model
    _strip_forward_patches(deep)
    deep.eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # the policy trains away from both references
        for n, p in policy.named_parameters():
            if "lora_" in n:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
    trainer.ema_model.update(policy, 0.4)
    SyncRefModelCallback.sync_target_model(policy, deep, 0.4)
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if "lora_" in n}

    tok = trainer._tokenizer
    completions = [tok.encode(t) for t in ["<answer>A</answer>", "<think>x</think><answer>B</answer>",
                                           "<answer>B</answer>"] * 3]
    prompts = _prompts(_rows(), 3)
    shared = trainer._reference_confidence_shared(prompts, completions)
    each = trainer._reference_confidence_each(prompts, completions)
    adapter_ema = trainer.ema_model
    trainer.ema_model = deep
    want = trainer._reference_confidence_shared(prompts, completions)
    trainer.ema_model = adapter_ema
    assert (want > 0).all()
    torch.testing.assert_close(shared, want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(each, want, rtol=1e-4, atol=1e-5)
    # and the policy's own confidences differ (the EMA really is another model)
    ema_state = {k: v.clone() for k, v in adapter_ema.weights.items()}
    for k, v in adapter_ema.weights.items():
        v.data.copy_(dict(policy.named_parameters())[k.replace("__", ".")].detach())
    assert not torch.allclose(trainer._reference_confidence_shared(prompts, completions), want, atol=1e-4)
    for k, v in adapter_ema.weights.items():
        v.data.copy_(ema_state[k])
    assert policy.training
    assert all(torch.equal(p.detach(), before[n]) for n, p in policy.named_parameters() if "lora_" in n)


def test_adapter_ema_round_trips_through_the_checkpoint_file(peaked_dir, tmp_path):  # noqa: F811
    from components.common.training import load_module_weights, save_module_weights
    from components.grpo.adapters import AdapterEMA

    trainer = _trainer(peaked_dir, tmp_path, consistency_bonus=0.5, lora=True)
    ema = trainer.ema_model
    with torch.no_grad():
        for v in ema.parameters():
            v.add_(1.0)
    save_module_weights(ema, tmp_path / "ema.safetensors")
    fresh = AdapterEMA(trainer.accelerator.unwrap_model(trainer.model))
    assert not all(torch.equal(a, b) for a, b in zip(fresh.parameters(), ema.parameters()))
    load_module_weights(fresh, tmp_path / "ema.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), ema.parameters()))



def _base_weights(model):
    return {n: p for n, p in model.named_parameters() if "base_layer.weight" in n}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merged_adapters_compute_as_the_adapters_and_the_base_comes_back_bit_for_bit(tiny_model_dir, dtype):
    from components.grpo.adapters import adapters_merged

    model = _lora(tiny_model_dir, dtype)
    base = {n: (p, p.data, p.detach().clone()) for n, p in _base_weights(model).items()}
    layers = [m for m in model.modules() if hasattr(m, "lora_A") and hasattr(m, "merged")]
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        ref = model(input_ids=ids).logits.float()
        with model.disable_adapter():
            base_only = model(input_ids=ids).logits.float()
        with adapters_merged(model) as n:
            assert n == len(layers) == len(base)
            assert all(m.merged for m in layers)  # the forward skips the adapters: one matmul per projection
            assert all(not torch.equal(p.detach(), before) for p, _, before in base.values())
            got = model(input_ids=ids).logits.float()
    tol = 1e-4 if dtype == torch.float32 else 0.05
    torch.testing.assert_close(got, ref, rtol=tol, atol=tol)
    assert (got - base_only).abs().max() > 10 * (got - ref).abs().max()  # the adapters really act
    assert not any(m.merged for m in layers)
    for n, p in _base_weights(model).items():
        param, data, before = base[n]
        assert p is param and p.data.data_ptr() == data.data_ptr()  # the very tensor, not a copy
        assert torch.equal(p.detach(), before)  # bit for bit: no merge/unmerge drift
    # training goes on as before: gradients reach the adapters, and the model outside the block is the unmerged one
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits.float(), ref, rtol=0, atol=0)
    model(input_ids=ids).logits.float().sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_A" in n)


def test_merging_is_refused_with_gradients_and_skips_what_peft_cannot_merge_exactly(tiny_model_dir):
    from components.grpo.adapters import adapters_merged

    model = _lora(tiny_model_dir, torch.float32, use_dora=True)
    with pytest.raises(RuntimeError, match="torch.no_grad"):
        with adapters_merged(model):
            pass
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        ref = model(input_ids=ids).logits
        with adapters_merged(model) as n:
            assert n == 0  # DoRA layers keep computing their adapters
            torch.testing.assert_close(model(input_ids=ids).logits, ref, rtol=0, atol=0)
        with model.disable_adapter(), adapters_merged(model) as n:
            assert n == 0  # nothing is active: nothing to merge


@pytest.mark.parametrize("deepspeed, fsdp, merges", [(False, False, True), (True, False, False), (False, True, False)])
def test_merging_only_where_each_process_holds_whole_weights(tiny_model_dir, deepspeed, fsdp, merges):
    from types import SimpleNamespace

    from components.grpo.adapters import merged_unless_sharded

    model = _lora(tiny_model_dir, torch.float32)
    trainer = SimpleNamespace(is_deepspeed_enabled=deepspeed, is_fsdp_enabled=fsdp)
    layers = [m for m in model.modules() if hasattr(m, "lora_A") and hasattr(m, "merged")]
    with torch.no_grad(), merged_unless_sharded(trainer, model) as n:
        assert (n > 0) == merges and all(m.merged == merges for m in layers)
    assert not any(m.merged for m in layers)
