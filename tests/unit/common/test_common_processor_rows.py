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


def test_reused_images_equal_preparing_them_anew_and_are_prepared_once(proc, prepared_images):
    a, b, c = _img(0), _img(1, (112, 56)), _img(2, (84, 84))
    text = ["<|vision_start|><|image_pad|><|vision_end|> q"] * 2
    prepared = prepared_images(proc)
    calls = [([[a], [b]], text), ([[b], [c]], text), ([[c, a]], ["<|vision_start|><|image_pad|><|vision_end|>" * 2])]
    want = [Qwen2_5_VLProcessor.__call__(proc, images=i, text=t, padding=True, return_tensors="pt") for i, t in calls]
    prepared.clear()
    with proc.reusing_images():
        with proc.reusing_images():  # nested: the outer block's memo
            got = [proc(images=i, text=t, padding=True, return_tensors="pt") for i, t in calls]
        assert proc._image_memo  # still held by the outer block
        again = proc(images=[[a.copy()], [b]], text=text, padding=True, return_tensors="pt")
        assert len(prepared) == 3  # each image once, in whichever call met it first; a copy is the same pixels
        edited = a.copy()
        edited.putpixel((0, 0), (1, 2, 3))
        proc(images=[[edited]], text=text[:1], padding=True, return_tensors="pt")
        assert len(prepared) == 4  # other pixels: prepared
        # another image setting is another preparation
        smaller = proc(images=[[a], [b]], text=text, padding=True, return_tensors="pt",
                       size={"shortest_edge": 28 * 28, "longest_edge": 28 * 28})
        assert len(prepared) == 6 and smaller["pixel_values"].shape[0] < again["pixel_values"].shape[0]
    assert proc._image_memo is None and proc._image_device is None  # dropped with the outermost block
    for g, w in zip([*got, again], [*want, want[0]], strict=True):
        assert set(g) == set(w) and all(torch.equal(g[k], w[k]) for k in w)
    proc(images=[[a], [b]], text=text, padding=True, return_tensors="pt")
    assert len(prepared) == 8  # outside the block every call prepares its images


def test_reused_images_kept_on_a_device_come_back_equal(proc):
    a, b = _img(0), _img(1, (112, 56))
    text = ["<|vision_start|><|image_pad|><|vision_end|> q"] * 4
    images = [[a], [a], [b], [b]]
    want = Qwen2_5_VLProcessor.__call__(proc, images=images, text=text, padding=True, return_tensors="pt")
    with proc.reusing_images(device=torch.device("cpu")):
        got = proc(images=images, text=text, padding=True, return_tensors="pt")
        as_numpy = proc(images=[[b]], text=text[:1], padding=True)  # numpy outputs come back to the host
        assert all(m[0].device.type == "cpu" for m in proc._image_memo.values())
    assert all(torch.equal(got[k], want[k]) for k in want)
    fresh_b = Qwen2_5_VLProcessor.__call__(proc, images=[[b]], text=text[:1], padding=True, return_tensors="pt")
    assert np.array_equal(np.asarray(as_numpy["pixel_values"]), fresh_b["pixel_values"].numpy())
