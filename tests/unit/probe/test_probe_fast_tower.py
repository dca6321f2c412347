"""The batched dense tower path computes exactly what the Hugging Face tower computes (CPU, fp32)."""

from __future__ import annotations

import pytest
import torch

from components.probe.fast_tower import (
    fast_pooled_features,
    fast_tokens,
    hf_pooled_features,
    hf_tokens,
    make_plan,
    pool,
    window_index,
)


def _tower(depth=3, full=(1,)):
    from transformers import Qwen2_5_VLConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    torch.manual_seed(0)
    vcfg = Qwen2_5_VLConfig(
        vision_config=dict(depth=depth, hidden_size=32, intermediate_size=48, num_heads=2, out_hidden_size=24,
                           fullatt_block_indexes=list(full), window_size=112, patch_size=14, spatial_merge_size=2)
    ).vision_config
    return Qwen2_5_VisionTransformerPretrainedModel._from_config(vcfg, attn_implementation="sdpa").eval()


@pytest.mark.parametrize(
    "grid, n_windows, lengths",
    [
        (4, 1, [4]),  # 56 px: a 2x2 merged grid fits in one (padded) 4x4 window
        (16, 4, [16] * 4),  # 224 px: 8x8 merged tokens -> four 4x4 windows
        (10, 4, [16, 4, 4, 1]),  # 140 px: 5x5 merged tokens -> unequal windows (fast path must refuse)
    ],
)
def test_window_index_matches_qwen_layout(grid, n_windows, lengths):
    perm, lens = window_index(grid, grid, merge=2, window_size=112, patch_size=14)
    assert lens == lengths and len(lens) == n_windows
    assert sorted(perm.tolist()) == list(range((grid // 2) ** 2))  # a permutation of every merged token


@pytest.mark.parametrize("image_size", [56, 224, 336])  # 1, 4 and 9 equal windows
def test_fast_path_equals_hf_tower(image_size):
    visual = _tower()
    g = image_size // 14
    plan = make_plan(visual, g, g)
    assert plan is not None
    b = 3
    px = torch.randn(b * g * g, 3 * 2 * 14 * 14)
    thw = torch.tensor([[1, g, g]] * b)
    with torch.inference_mode():
        ref = hf_tokens(visual, px, thw).view(b, -1, 24)
        got = fast_tokens(visual, px, plan)
        assert torch.allclose(got, ref, atol=1e-5, rtol=1e-4)
        for pooling in ("mean", "max"):
            assert torch.allclose(fast_pooled_features(visual, px, plan, pooling),
                                  hf_pooled_features(visual, px, thw, pooling), atol=1e-5, rtol=1e-4)


def test_fast_path_equals_hf_on_tiny_checkpoint(tiny_model_dir):
    from components.common.modeling import load_model_and_processor
    from components.probe.features import get_visual

    model, _ = load_model_and_processor(str(tiny_model_dir), device="cpu")
    visual = get_visual(model)
    plan = make_plan(visual, 16, 16)
    px = torch.randn(2 * 256, 1176)
    with torch.inference_mode():
        ref = hf_pooled_features(visual, px, torch.tensor([[1, 16, 16]] * 2), "mean")
        got = fast_pooled_features(visual, px, plan, "mean")
    assert got.shape == (2, 64)
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-4)


def test_plan_refuses_unequal_windows():
    assert make_plan(_tower(), 10, 10) is None  # 140 px -> windows of 16, 4, 4, 1 merged tokens


def test_pool_rejects_unknown_pooling():
    with pytest.raises(ValueError, match="pooling='median'"):
        pool(torch.zeros(1, 4, 3), "median")
