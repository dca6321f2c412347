"""The batched vision attention (components.common.vision_attention) against transformers' per-window forward."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from components.common.vision_attention import batch_window_attention, per_window_attention, window_layout


@pytest.fixture(scope="module")
def towers(tiny_model_dir):
    """(stock vision tower, batched copy, image processor that keeps an image's size): fp32 on CPU."""
    from transformers import Qwen2VLImageProcessorPil

    from components.common.modeling import load_model_and_processor

    model, _ = load_model_and_processor(str(tiny_model_dir), device="cpu")
    batched = model.model.visual
    stock = copy.deepcopy(batched)
    assert per_window_attention(stock) == len(stock.blocks)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # larger random weights (the same in both), so that attention is far from uniform
        for ps, pb in zip(stock.parameters(), batched.parameters()):
            w = torch.randn(ps.shape, generator=g) * 0.2
            ps.copy_(w)
            pb.copy_(w)
    proc = Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=400 * 400, patch_size=14, merge_size=2)
    return stock, batched, proc


def _pixels(proc, sizes):
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in sizes]
    out = proc(images=imgs, return_tensors="pt")
    return out["pixel_values"], out["image_grid_thw"]


@pytest.mark.parametrize(
    "sizes",
    [
        [(224, 224)],  # 8 x 8 merged tokens: four full 4 x 4 windows (the reshape path)
        [(196, 140)],  # 7 x 5: windows of 16, 12, 4 and 3 merged tokens (the padded path)
        [(224, 224), (196, 140), (56, 56)],  # three images: unequal windows and unequal full-attention spans
    ],
)
def test_batched_forward_equals_per_window_forward(towers, sizes):
    stock, batched, proc = towers
    pixels, grid = _pixels(proc, sizes)
    assert getattr(batched.blocks[0].attn.forward, "__func__", None) is not None  # patched on load
    want = stock(pixels, grid_thw=grid)
    got = batched(pixels, grid_thw=grid)
    want = getattr(want, "pooler_output", want)
    got = getattr(got, "pooler_output", got)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_batched_forward_has_the_same_gradients(towers):
    stock, batched, proc = towers
    pixels, grid = _pixels(proc, [(224, 224), (196, 140)])
    grads = []
    for tower in (stock, batched):
        tower.zero_grad(set_to_none=True)
        out = tower(pixels, grid_thw=grid)
        out = getattr(out, "pooler_output", out)
        (out.float() ** 2).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in tower.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "cu, windows, longest, padded",
    [
        ([0, 4, 8, 12], 3, 4, False),  # equal windows: a reshape, nothing to gather
        ([0, 4, 7, 12], 3, 5, True),  # unequal: padded to 5
        ([0, 4, 4, 8], 2, 4, False),  # an empty window (as unique_consecutive can leave) is dropped
    ],
)
def test_window_layout(cu, windows, longest, padded):
    t = torch.tensor(cu, dtype=torch.int32)
    n, big, gather, mask, scatter = window_layout(t)
    assert (n, big, gather is not None) == (windows, longest, padded)
    if padded:
        # every real position is gathered once and scattered back to where it came from
        assert scatter.numel() == cu[-1]
        assert gather[scatter].tolist() == list(range(cu[-1]))
        assert mask.sum().item() == cu[-1]
    assert window_layout(t) is window_layout(t)  # read to the host once per tensor


def test_only_sdpa_towers_are_changed(tiny_model_dir):
    from transformers import Qwen2_5_VLForConditionalGeneration

    eager = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(tiny_model_dir), attn_implementation="eager")
    assert batch_window_attention(eager) == 0
    sdpa = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(tiny_model_dir), attn_implementation="sdpa")
    assert batch_window_attention(sdpa) == len(sdpa.model.visual.blocks)
    assert batch_window_attention(sdpa) == 0  # already batched
