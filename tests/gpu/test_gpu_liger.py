"""Liger's kernels on a CUDA GPU (`liger_kernels: true`): the patched model's logits are as close to an fp32 reference
as the stock bf16 kernels', and the sampler decodes with them through its CUDA graphs (run with `make test-gpu`;
skipped where the liger-kernel package is absent)."""

from __future__ import annotations

import pytest


@pytest.mark.gpu
def test_liger_kernels_are_as_accurate_as_stock_bf16_and_sample(tiny_model_dir):
    pytest.importorskip("liger_kernel")
    import numpy as np
    import torch
    from PIL import Image

    from benchmarks.grpo import liger_contained
    from components.common.modeling import load_model_and_processor
    from components.common.sampling import Prompt, SamplingConfig, TransformersBackend

    rng = np.random.default_rng(0)
    prompts = [Prompt([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which modality?" * (i + 1)}]}],
                      Image.fromarray(rng.integers(0, 255, (56, 84, 3), dtype=np.uint8))) for i in range(3)]
    ref, proc = load_model_and_processor(str(tiny_model_dir), device="cuda", dtype="float32")
    enc = TransformersBackend("", SamplingConfig(), ref, proc)._encode(prompts)

    def logits(model):
        with torch.inference_mode():
            return model(**{k: v.to(model.dtype) if v.is_floating_point() else v for k, v in enc.items()}).logits.float()

    want = logits(ref)
    stock = logits(load_model_and_processor(str(tiny_model_dir), device="cuda")[0])  # bf16, transformers' kernels
    with liger_contained():
        model, _ = load_model_and_processor(str(tiny_model_dir), device="cuda", liger_kernels=True)
        layer = model.model.language_model.layers[0]
        assert layer.mlp._get_name() == "LigerSwiGLUMLP"  # the model really runs Liger's kernels
        assert layer.input_layernorm.forward.__func__.__module__.startswith("liger_kernel")
        from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl

        assert modeling_qwen2_5_vl.apply_rotary_pos_emb.__module__.startswith("liger_kernel")  # the text rotary too
        got = logits(model)
        stock_err, liger_err = (stock - want).abs().mean(), (got - want).abs().mean()
        assert liger_err <= 1.5 * stock_err + 1e-4, (float(liger_err), float(stock_err))
        assert (got.argmax(-1) == want.argmax(-1)).float().mean() >= (stock.argmax(-1) == want.argmax(-1)).float().mean() - 0.05
        backend = TransformersBackend("", SamplingConfig(max_new_tokens=8, liger_kernels=False), model, proc)
        samples, greedy = backend.sample_and_greedy(prompts, 4)  # CUDA-graph decode through Liger's kernels
        assert len(samples) == 3 and all(len(s) == 4 for s in samples) and len(greedy) == 3
