"""Liger's fused kernels as a setting of the sampler, the harness (diagnose, evaluate) and the trainers: refused early,
with the fix named, where they cannot run (no package, no CUDA GPU, the vLLM backend); on a GPU they are checked
against the stock kernels by tests/gpu/test_gpu_liger.py."""

from __future__ import annotations

import importlib.util

import pytest

from components.common.modeling import require_liger
from components.common.sampling import SamplingConfig


def test_require_liger_names_what_is_missing(monkeypatch):
    require_liger(False, on_cuda=False)  # off: nothing is needed anywhere
    with pytest.raises(ValueError, match=r"liger_kernels=True: Liger's kernels are Triton kernels for CUDA GPUs.*"
                                         r"set liger_kernels: false for CPU runs"):
        require_liger(True, on_cuda=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ValueError, match="label_liger=True needs the liger-kernel package .* set label_liger: false"):
        require_liger(True, "label_liger", on_cuda=True)


def test_sampling_config_keeps_liger_to_the_transformers_backend():
    assert SamplingConfig(liger_kernels=True).liger_kernels
    with pytest.raises(ValueError, match="liger_kernels=True applies to the transformers backend; backend='vllm'"):
        SamplingConfig(backend="vllm", liger_kernels=True)


def test_harness_passes_liger_to_its_sampler_and_records_it():
    from components.common.harness import HarnessConfig

    cfg = HarnessConfig(liger_kernels=True)
    assert cfg.sampling().liger_kernels
    assert cfg.record()["liger_kernels"] is True  # other kernels round differently: part of the measurement's record
    assert HarnessConfig().record()["liger_kernels"] is False


def test_a_cpu_model_is_refused_liger(tiny_model_dir):
    from components.common.modeling import load_model_and_processor
    from components.common.sampling import TransformersBackend

    model, proc = load_model_and_processor(str(tiny_model_dir), device="cpu")
    with pytest.raises(ValueError, match="Triton kernels for CUDA GPUs"):
        TransformersBackend("", SamplingConfig(liger_kernels=True, device="cpu"), model, proc)


def test_a_cpu_run_is_refused_liger_before_the_model_loads(monkeypatch):
    from components.common import modeling
    from components.common.sampling import TransformersBackend

    monkeypatch.setattr(modeling, "load_model_and_processor", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(ValueError, match="Triton kernels for CUDA GPUs"):
        TransformersBackend("some/checkpoint", SamplingConfig(liger_kernels=True, device="cpu"))


def test_the_text_rotary_embedding_is_routed_to_ligers_rope(tiny_model_dir, monkeypatch):
    """transformers 5 rotates q/k with the plain `apply_rotary_pos_emb` (rotary sections merged upstream), which
    Liger's Qwen2.5-VL patch misses; `liger_text_rope` routes it to Liger's rope. Here Liger's rope is stood in by a
    torch copy of its interface (liger-kernel runs on CUDA only): the model must call it in every layer and give the
    same logits."""
    import sys
    import types

    import torch
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as module

    from components.common.modeling import liger_text_rope, load_model_and_processor

    calls = []
    stock = module.apply_rotary_pos_emb

    def rope(q, k, cos, sin, position_ids=None, unsqueeze_dim=1):  # Liger's signature
        calls.append(q.shape)
        return stock(q, k, cos, sin, unsqueeze_dim=unsqueeze_dim)

    fake = types.ModuleType("liger_kernel.transformers.rope")
    fake.liger_rotary_pos_emb = rope
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers.rope", fake)
    monkeypatch.setattr(module, "apply_rotary_pos_emb", stock)  # put back after the test
    model, _ = load_model_and_processor(str(tiny_model_dir), device="cpu")
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        want = model(input_ids=ids).logits
        assert liger_text_rope() is True
        got = model(input_ids=ids).logits
    assert len(calls) == model.config.text_config.num_hidden_layers  # every decoder layer, once
    assert torch.equal(got, want)
