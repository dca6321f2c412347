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
