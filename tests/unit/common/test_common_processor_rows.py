"""ImageQwenVLProcessor: rows repeated within one call are processed once and copied (what GRPO's G copies of a
prompt hand it), with outputs equal to processing every row."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Qwen2_5_VLProcessor

from components.common.modeling import _repeated_rows, load_processor


@pytest.fixture(scope="module")
def proc(tiny_model_dir):
    return load_processor(str(tiny_model_dir))


def _img(seed, size=(56, 84)):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size[::-1], 3), dtype=np.uint8))


def test_repeated_rows_plan():
    a, b = _img(0), _img(1)
    # G copies side by side: one distinct row per prompt
    assert _repeated_rows([[a], [a], [b], [b]], ["x", "x", "y", "y"]) == ([0, 2], [0, 0, 1, 1])
    # the same image with another text is another row
    assert _repeated_rows([[a], [a]], ["x", "y"]) is None
    # equal pixels in two objects are not assumed equal (identity only)
    assert _repeated_rows([[_img(0)], [_img(0)]], ["x", "x"]) is None
    # a flat list of one image per row counts as such
    assert _repeated_rows([a, a], ["x", "x"]) == ([0], [0, 0])
    # not one image list per text row: left to the processor
    assert _repeated_rows([a], ["x", "x"]) is None
    assert _repeated_rows([[a]], "x") is None


@pytest.mark.parametrize("size_b", [(56, 84), (112, 56)])  # the second prompt's image: same or another patch count
def test_deduplicated_call_equals_the_full_call(proc, size_b):
    a, b = _img(0), _img(1, size_b)
    images = [[a], [a], [a], [b], [b], [a, b], [a, b]]
    text = ["<|vision_start|><|image_pad|><|vision_end|> what is shown?"] * 3 + \
        ["<|vision_start|><|image_pad|><|vision_end|> which modality?"] * 2 + \
        ["<|vision_start|><|image_pad|><|vision_end|><|vision_start|><|image_pad|><|vision_end|> compare"] * 2
    got = proc(images=images, text=text, padding=True, return_tensors="pt")
    want = Qwen2_5_VLProcessor.__call__(proc, images=images, text=text, padding=True, return_tensors="pt")
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k


def test_distinct_rows_and_other_tensor_types_take_the_plain_path(proc):
    a, b = _img(0), _img(1)
    text = ["<|vision_start|><|image_pad|><|vision_end|> q"] * 2
    got = proc(images=[[a], [b]], text=text, padding=True, return_tensors="pt")
    want = Qwen2_5_VLProcessor.__call__(proc, images=[[a], [b]], text=text, padding=True, return_tensors="pt")
    assert all(torch.equal(got[k], want[k]) for k in want)
    plain = proc(images=[[a], [a]], text=text, padding=True)  # lists, not tensors: no dedup, the processor's own
    assert len(plain["input_ids"]) == 2


def test_chat_template_renderings_are_cached_and_equal(proc):
    from components.common import modeling

    def msg(img, text):
        return [{"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": text}]}]

    a, b = _img(0), _img(1)
    plain = Qwen2_5_VLProcessor.apply_chat_template
    modeling._RENDERED.clear()
    first = proc.apply_chat_template(msg(a, "what?"), tokenize=False, add_generation_prompt=True)
    assert first == plain(proc, msg(a, "what?"), tokenize=False, add_generation_prompt=True)
    assert len(modeling._RENDERED) == 1
    # another image, same text: the same rendering, from the cache
    assert proc.apply_chat_template(msg(b, "what?"), tokenize=False, add_generation_prompt=True) == first
    assert len(modeling._RENDERED) == 1
    # other text or other arguments render anew
    other = proc.apply_chat_template(msg(a, "which?"), tokenize=False, add_generation_prompt=True)
    assert other != first and other == plain(proc, msg(a, "which?"), tokenize=False, add_generation_prompt=True)
    no_gen = proc.apply_chat_template(msg(a, "what?"), tokenize=False, add_generation_prompt=False)
    assert no_gen != first and len(modeling._RENDERED) == 3
    # tokenised calls are not cached
    proc.apply_chat_template(msg(a, "what?"), tokenize=True, add_generation_prompt=True)
    assert len(modeling._RENDERED) == 3
