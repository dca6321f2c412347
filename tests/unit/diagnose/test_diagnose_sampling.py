"""The transformers backend's contract on the tiny Qwen2.5-VL: shapes, seeding, greedy == generate, sampler maths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.common.sampling import Prompt, SamplingConfig, TransformersBackend, sample_next


@pytest.fixture(scope="module")
def peaked(tiny_model_dir):
    """The tiny model with larger random text weights, so greedy continuations vary (not one repeated token)."""
    from components.common.modeling import load_model_and_processor

    model, proc = load_model_and_processor(str(tiny_model_dir))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.model.language_model.parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model, proc


def _prompts():
    from PIL import Image

    rng = np.random.default_rng(0)
    ps = [Prompt([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What modality is this?" * (i + 1)}]}],
                 Image.fromarray(rng.integers(0, 255, (56, 56, 3), dtype=np.uint8))) for i in range(3)]
    ps.append(Prompt([{"role": "user", "content": [{"type": "text", "text": "Options: A. B."}]}]))  # text-only
    return ps


def _backend(peaked, **kw):
    model, proc = peaked
    return TransformersBackend("", SamplingConfig(max_new_tokens=12, batch_size=4, **kw), model, proc)


def test_shapes_and_seeded_determinism(peaked):
    ps = _prompts()
    s, g = _backend(peaked, seed=0).sample_and_greedy(ps, 5)
    assert len(s) == len(ps) and all(len(row) == 5 and all(isinstance(x, str) for x in row) for row in s)
    assert len(g) == len(ps)
    assert _backend(peaked, seed=0).sample_and_greedy(ps, 5) == (s, g)  # same seed, same completions
    assert _backend(peaked, seed=1).sample(ps, 5) != s  # another seed, other samples
    assert len({x for row in s for x in row}) > 5  # the K samples differ from each other


def test_greedy_row_equals_generate(peaked):
    model, _ = peaked
    be = _backend(peaked)
    ps = _prompts()
    _, g = be.sample_and_greedy(ps, 3)
    assert be.greedy(ps) == g  # the greedy row does not depend on the sampled rows beside it
    for batch, expected in ((ps[:3], g[:3]), (ps[3:], g[3:])):  # images (left-padded, multimodal RoPE); text-only
        enc = be._encode(batch)
        out = model.generate(**enc, do_sample=False, max_new_tokens=12, pad_token_id=be.pad_id,
                             bad_words_ids=[[i] for i in be.suppress_ids])
        ref = be._decode(out[:, enc["input_ids"].shape[1]:])
        assert ref == expected
    assert len(set(g)) > 1 and len(set(g[0])) > 2  # a meaningful comparison: varied text


def test_near_zero_temperature_sampling_is_greedy(peaked):
    be = _backend(peaked, temperature=1e-5)
    ps = _prompts()
    s, g = be.sample_and_greedy(ps, 3)
    assert all(x == g[i] for i, row in enumerate(s) for x in row)


def test_sample_next_top_p_and_suppression():
    probs = torch.tensor([0.6, 0.3, 0.1, 0.0001])
    logits = probs.log().expand(20000, -1).clone()
    gen = torch.Generator().manual_seed(0)
    t = sample_next(logits, temperature=1.0, top_p=0.5, generator=gen)
    assert set(t.tolist()) == {0}  # the top token alone reaches 0.5
    t = sample_next(logits, temperature=1.0, top_p=0.8, generator=gen)
    assert set(t.tolist()) == {0, 1} and abs((t == 0).float().mean().item() - 2 / 3) < 0.02  # renormalised 0.6/0.9
    t = sample_next(logits, temperature=1.0, top_p=0.8, generator=gen, candidates=1)  # fallback: full sort
    assert set(t.tolist()) == {0, 1}
    t = sample_next(logits, temperature=1.0, top_p=1.0, generator=gen, suppress_ids=torch.tensor([0]))
    assert 0 not in set(t.tolist()) and abs((t == 1).float().mean().item() - 0.3 / 0.4001) < 0.02


def test_bad_sampling_config():
    with pytest.raises(ValueError, match="temperature=0"):
        SamplingConfig(temperature=0)
    with pytest.raises(ValueError, match="backend='tgi'"):
        SamplingConfig(backend="tgi")
