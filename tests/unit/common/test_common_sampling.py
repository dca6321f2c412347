"""The transformers backend's contract on the tiny Qwen2.5-VL: shapes, seeding, greedy == generate, sampler maths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.common.sampling import (
    Prompt,
    SamplingConfig,
    TransformersBackend,
    sample_next,
    shared_prefix_generate,
)
from tests.attention_cases import decode_attention_case, fill_packed_cache


@pytest.fixture(scope="module")
def peaked(tiny_model_dir):
    """The tiny model with larger random text weights, so greedy continuations vary (not one repeated token)."""
    from components.common.modeling import load_model_and_processor

    # On CPU in fp32 on every machine: these tests assert token-exact equalities that bf16 GPU kernels do not give
    # (the GPU path is measured by benchmarks/sampling.py).
    model, proc = load_model_and_processor(str(tiny_model_dir), device="cpu")
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


@pytest.fixture(params=["padded", "packed"])
def layout(request, monkeypatch):
    """Both decode-cache layouts: padded (`cascade_attention`, what CPUs run) and packed (`varlen_cascade_attention`,
    what FlashAttention GPUs run), the packed one here through `varlen_attention_reference` on the CPU."""
    from components.common import sampling

    if request.param == "packed":
        monkeypatch.setattr(sampling, "_varlen_kernel", lambda device, dtype: sampling.varlen_attention_reference)
    return request.param


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


def test_greedy_row_equals_generate(peaked, layout):
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


@pytest.mark.parametrize("batch", [slice(0, 3), slice(3, 4)])  # left-padded prompts with images; one text-only prompt
def test_static_shape_decode_equals_dynamic(peaked, monkeypatch, batch, layout):
    # The CUDA-graph decode's static-shape step (run eagerly on CPU): bucketed cache views through a mask, device-side
    # positions. Bucket 5 with 12 new tokens crosses two bucket edges. Same tokens as the dynamic path.
    from components.common import sampling

    monkeypatch.setattr(sampling, "GRAPH_BUCKET", 5)
    model, _ = peaked
    be = _backend(peaked)
    enc = dict(be._encode(_prompts()[batch]))
    kw = {"n": 4, "greedy_row": True, "max_new_tokens": 12, "eos_ids": (), "pad_id": be.pad_id,
          "suppress_ids": be.suppress_ids, "image_token_id": be.image_token_id}
    dynamic = shared_prefix_generate(model, dict(enc), generator=torch.Generator().manual_seed(0), **kw)
    static = shared_prefix_generate(model, dict(enc), generator=torch.Generator().manual_seed(0), cuda_graph=True, **kw)
    assert static.shape == dynamic.shape == (len(enc["input_ids"]), 5, 12)
    diff = (static != dynamic).nonzero().tolist()
    assert torch.equal(static, dynamic), diff


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
    t = sample_next(logits, temperature=1.0, top_p=0.95, generator=gen)  # 0.6 + 0.3 < 0.95: the third joins
    assert set(t.tolist()) == {0, 1, 2}
    t = sample_next(logits, temperature=1.0, top_p=1.0, generator=gen, suppress_ids=torch.tensor([0]))
    assert 0 not in set(t.tolist()) and abs((t == 1).float().mean().item() - 0.3 / 0.4001) < 0.02


def _explicit_nucleus_draw(logits, temperature, top_p, gen):
    """Reference: build each row's nucleus explicitly (tokens whose strictly more probable tokens hold < top_p), then
    the exponential race over it with the noise `sample_next` draws from the same generator state."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    noise = torch.empty_like(probs).exponential_(1.0, generator=gen)
    above = (probs[:, None, :] * (probs[:, None, :] > probs[:, :, None])).sum(-1)  # (R, V): mass above each token
    keep = above < top_p
    return torch.where(keep, probs / noise, -1.0).argmax(-1), keep


@pytest.mark.parametrize(
    "case, scale, quantise, top_p",
    [
        ("flat logits: the nucleus is most of the vocabulary, many winners rejected", 0.5, False, 0.9),
        ("peaked logits: a nucleus of a few tokens", 6.0, False, 0.9),
        ("bf16-rounded logits: ties at the nucleus edge (all tied tokens kept)", 2.0, True, 0.7),
        ("top_p 0.3: most first winners lie outside", 1.0, False, 0.3),
    ],
)
def test_sample_next_equals_explicit_nucleus(case, scale, quantise, top_p):
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(512, 300, generator=g) * scale
    if quantise:
        logits = logits.bfloat16().float()
    got = sample_next(logits, temperature=0.7, top_p=top_p, generator=torch.Generator().manual_seed(3))
    want, keep = _explicit_nucleus_draw(logits, 0.7, top_p, torch.Generator().manual_seed(3))
    assert torch.equal(got, want), case
    assert bool(keep.gather(1, got[:, None]).all())  # never a token outside the nucleus
    first = (logits / 0.7).softmax(-1) / torch.empty(512, 300).exponential_(1.0, generator=torch.Generator().manual_seed(3))
    assert (first.argmax(-1) != got).any(), case  # the rejection path really ran


def test_bad_sampling_config():
    with pytest.raises(ValueError, match="temperature=0"):
        SamplingConfig(temperature=0)
    with pytest.raises(ValueError, match="backend='tgi'"):
        SamplingConfig(backend="tgi")


def test_pixel_bounds_resize_images_and_truncation_is_flagged(tiny_model_dir):
    """min/max pixels reach the image processor (the paper's harness sets them), and a completion cut at
    max_new_tokens comes back flagged as truncated."""
    from PIL import Image

    from components.common.prompts import build_messages
    from components.common.records import MCQRecord
    from components.common.sampling import Prompt, SamplingConfig, TransformersBackend

    rec = MCQRecord(id="q", question="Which?", options=["a", "b"], answer="A", image="x.png", task="t")
    prompt = Prompt(build_messages(rec), Image.new("RGB", (200, 200)))
    grids = {}
    for bounds in ((0, 0), (112 * 112, 112 * 112)):
        backend = TransformersBackend(str(tiny_model_dir), SamplingConfig(max_new_tokens=3, min_pixels=bounds[0],
                                                                          max_pixels=bounds[1], device="cpu"))
        grids[bounds] = backend._encode([prompt])["image_grid_thw"].tolist()
    assert grids[(0, 0)] == [[1, 4, 4]] and grids[(112 * 112, 112 * 112)] == [[1, 8, 8]]  # 56 px default vs 112 px
    samples, greedy = backend.sample_and_greedy([prompt], 2)
    assert greedy[0].truncated and all(s.truncated for s in samples[0])  # 3 tokens never reach the end of a turn


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cascade_attention_equals_attention_over_each_rows_full_keys(dtype):
    # Each row's attention over [its prompt's keys (left padding masked), its own new tokens (the unwritten masked)],
    # computed with SDPA on explicit per-row copies, equals the cascade's one read of each prompt.
    from components.common.sampling import cascade_attention

    (q, pk, pv, pmask, sk, sv, rows, written), want = decode_attention_case(dtype)
    b, length, s, d = pmask.shape[0], pmask.shape[1], sk.shape[2], q.shape[-1]
    pbias = torch.zeros(b, length).masked_fill(~pmask, float("-inf"))
    sbias = torch.zeros(s).masked_fill(torch.arange(s) >= written, float("-inf"))
    got = cascade_attention(q, pk, pv, pbias, sk, sv, sbias, d**-0.5)
    assert got.dtype == dtype and got.shape == q.shape
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got.float(), want, rtol=tol, atol=tol)
    # the unwritten positions really are excluded, and the padding too
    leaked = cascade_attention(q, pk, pv, pbias, sk, sv, None, d**-0.5)
    assert (leaked.float() - want).abs().max() > 10 * tol
    unpadded = cascade_attention(q, pk, pv, torch.zeros(b, length), sk, sv, sbias, d**-0.5)
    assert (unpadded.float() - want)[:rows].abs().max() > 10 * tol


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_cascade_equals_attention_over_each_rows_full_keys(dtype, static):
    # The packed layout (unpadded prompt keys, per-row suffixes read up to the written count held in a device tensor)
    # through the variable-length kernel's interface, in the dynamic and the static (CUDA-graph) modes.
    from components.common.sampling import (
        _PrefixCache,
        varlen_attention_reference,
        varlen_cascade_attention,
    )

    (q, pk, pv, pmask, sk, sv, rows, written), want = decode_attention_case(dtype)
    s, d = sk.shape[2], q.shape[-1]
    cache = _PrefixCache([(pk, pv)], pmask, rows, s, varlen=varlen_attention_reference)
    assert cache.prompt_keys[0].shape[0] == int(pmask.sum())  # the left padding is not held
    fill_packed_cache(cache, sk, sv, written, static)
    got = varlen_cascade_attention(q, cache, 0, d**-0.5)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert got.dtype == dtype and got.shape == q.shape
    torch.testing.assert_close(got.float(), want, rtol=tol, atol=tol)
    cache.suffix_used.fill_(s)  # reading the unwritten positions changes the result: the count is what masks them
    assert (varlen_cascade_attention(q, cache, 0, d**-0.5).float() - want).abs().max() > 10 * tol


def test_merge_attention_parts_is_attention_over_the_union():
    import torch.nn.functional as F

    from components.common.sampling import merge_attention_parts

    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(5, 8, generator=g), torch.randn(9, 8, generator=g) * 3, torch.randn(9, 8, generator=g)

    def part(ks, vs):
        scores = q @ ks.T
        return scores.softmax(-1) @ vs, torch.logsumexp(scores, -1)

    got = merge_attention_parts(*part(k[:4], v[:4]), *part(k[4:], v[4:]))
    torch.testing.assert_close(got, F.scaled_dot_product_attention(q, k, v, scale=1.0), rtol=1e-5, atol=1e-5)


def test_the_decode_cache_holds_each_prompt_once(peaked, layout):
    model, _ = peaked
    be = _backend(peaked)
    enc = dict(be._encode(_prompts()[:3]))
    stats = {}
    shared_prefix_generate(model, enc, n=16, greedy_row=True, max_new_tokens=4, pad_id=be.pad_id,
                           generator=torch.Generator().manual_seed(0), stats=stats)
    tc = model.config.text_config
    per_token = tc.num_hidden_layers * 2 * tc.num_key_value_heads * (tc.hidden_size // tc.num_attention_heads) * 4
    b, length = enc["input_ids"].shape
    held = b * length if layout == "padded" else int(enc["attention_mask"].sum())  # packed: no left padding
    assert held < b * length or layout == "padded"  # the batch is left-padded
    assert stats["kv_bytes_allocated"] == per_token * (held + b * 17 * 4)  # prompts once + each row's 4 new


def test_batches_are_prepared_and_decoded_on_a_host_thread_with_the_sequential_results(peaked):
    # The next batch's inputs and the previous batch's texts are made on one host thread while the model samples; the
    # completions are the ones the plain batch-by-batch loop gives (same batches, same order of draws).
    import threading

    be = _backend(peaked, seed=3)
    be.cfg.batch_size = 2  # groups: images [0, 1], images [2], text [3]
    ps = _prompts()
    where: dict[str, set] = {"encode": set(), "decode": set()}
    encode_host, decode = be._encode_host, be._decode

    def recorded(kind, fn):
        def call(*a, **kw):
            where[kind].add(threading.current_thread().name)
            return fn(*a, **kw)
        return call

    be._encode_host, be._decode = recorded("encode", encode_host), recorded("decode", decode)
    samples, greedy = be.sample_and_greedy(ps, 3)
    assert where["encode"] == where["decode"] == {"medbridge-sampler-host_0"}  # never the main thread
    be._encode_host, be._decode = encode_host, decode

    gen = torch.Generator().manual_seed(3)
    want = []
    for group in ([0, 1], [2], [3]):
        toks = be._generate(dict(be._encode([ps[i] for i in group])), n=3, greedy_row=True, max_new_tokens=12,
                            temperature=be.cfg.temperature, top_p=be.cfg.top_p, eos_ids=be.eos_ids, pad_id=be.pad_id,
                            suppress_ids=be.suppress_ids, image_token_id=be.image_token_id, generator=gen)
        want += [texts[j * 4 : (j + 1) * 4] for texts in [be._decode(toks.reshape(-1, toks.shape[-1]))]
                 for j in range(len(group))]
    assert samples == [w[1:] for w in want] and greedy == [w[0] for w in want]
    assert [[c.tokens for c in w] for w in want] == [[g.tokens, *(c.tokens for c in s)] for s, g in zip(samples, greedy)]
    assert all(1 <= c.tokens <= 12 and (c.tokens == 12 or not c.truncated) for w in want for c in w)
