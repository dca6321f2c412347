"""The processor's image memo kept on a CUDA GPU (what a GRPO step uses): a prompt's repeated rows are laid out on the
device, equal to preparing them on the host (run with `make test-gpu`)."""

from __future__ import annotations

import pytest


@pytest.mark.gpu
def test_reused_images_on_the_gpu_equal_host_preparation(tiny_model_dir):
    import numpy as np
    import torch
    from PIL import Image
    from transformers import Qwen2_5_VLProcessor

    from components.common.modeling import load_processor

    proc = load_processor(str(tiny_model_dir))
    rng = np.random.default_rng(0)
    a, b = (Image.fromarray(rng.integers(0, 255, (56, 84, 3), dtype=np.uint8)) for _ in range(2))
    images, text = [[a]] * 4 + [[b]] * 4, ["<|vision_start|><|image_pad|><|vision_end|> q"] * 8
    want = Qwen2_5_VLProcessor.__call__(proc, images=images, text=text, padding=True, return_tensors="pt")
    with proc.reusing_images(device=torch.device("cuda")):
        got = proc(images=images, text=text, padding=True, return_tensors="pt")
        again = proc(images=[[a.copy()]], text=text[:1], padding=True)  # numpy, from the device memo
    assert got["pixel_values"].is_cuda and not got["image_grid_thw"].is_cuda  # the grid stays on the host
    assert all(torch.equal(got[k].cpu(), want[k]) for k in want)
    assert isinstance(again["pixel_values"], np.ndarray)
    assert again["pixel_values"].shape[0] == want["pixel_values"].shape[0] // 8
