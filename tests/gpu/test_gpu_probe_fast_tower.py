"""The batched dense tower on a CUDA GPU in bf16 matches the stock HF tower (run with `make test-gpu`)."""

from __future__ import annotations

import pytest


@pytest.mark.gpu
@pytest.mark.parametrize("image_size", [224, 448])  # 4 and 16 windows per image
def test_fast_tower_matches_hf_on_gpu_bf16(image_size):
    import torch
    from transformers import Qwen2_5_VLConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    from components.probe.fast_tower import fast_pooled_features, fast_tokens, hf_pooled_features, hf_tokens, make_plan

    torch.manual_seed(0)
    vcfg = Qwen2_5_VLConfig(
        vision_config=dict(depth=4, hidden_size=256, intermediate_size=512, num_heads=4, out_hidden_size=128,
                           fullatt_block_indexes=[1, 3], window_size=112, patch_size=14, spatial_merge_size=2)
    ).vision_config
    with torch.device("cuda"):
        visual = Qwen2_5_VisionTransformerPretrainedModel._from_config(vcfg, attn_implementation="sdpa")
    visual = visual.to(torch.bfloat16).eval()
    g = image_size // 14
    plan = make_plan(visual, g, g)
    assert plan is not None and plan.n_windows == (g // 8) ** 2
    b = 6
    px = torch.randn(b * g * g, 3 * 2 * 14 * 14, device="cuda", dtype=torch.bfloat16)
    thw = torch.tensor([[1, g, g]] * b, device="cuda")
    with torch.inference_mode():
        ref_tok = hf_tokens(visual, px, thw).float().view(b, -1, 128)
        got_tok = fast_tokens(visual, px, plan).float()
        ref = hf_pooled_features(visual, px, thw, "mean").float()
        got = fast_pooled_features(visual, px, plan, "mean").float()
    assert torch.isfinite(got).all()
    assert ((got_tok - ref_tok).norm() / ref_tok.norm()).item() < 2e-2
    assert ((got - ref).norm() / ref.norm()).item() < 2e-2


@pytest.mark.gpu
def test_extractor_on_gpu_matches_cpu(tiny_model_dir):
    """The pipeline path on CUDA: bf16, compiled fast tower, padded last batch, image-processor workers."""
    import numpy as np

    from components.probe.features import FeatureExtractor

    imgs = np.random.default_rng(0).integers(0, 255, size=(10, 28, 28), dtype=np.uint8)
    gpu = FeatureExtractor(str(tiny_model_dir), image_size=112, batch_size=4, device="cuda", num_workers=2)
    cpu = FeatureExtractor(str(tiny_model_dir), image_size=112, batch_size=4, device="cpu", num_workers=0)
    a, b = gpu.extract(imgs), cpu.extract(imgs)
    assert gpu.path_used == "fast" and gpu.forward_calls == 3 and a.shape == b.shape == (10, 64)
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < 3e-2
