"""The fused sampling kernel (`components/common/sampling_kernel.py`) on CPU, run by Triton's interpreter: token for
token the draw of the definition (explicit nucleus) from the same uniforms, with suppressed tokens, greedy rows,
finished rows and log-probabilities; its own generator's draws follow the nucleus distribution; and
`shared_prefix_generate` with it against the torch-ops sampler on the tiny model. The GPU test runs the compiled
kernel on the same cases (tests/gpu/test_gpu_sampling_kernel.py)."""

from __future__ import annotations

import os

import pytest
import torch

from tests.sampling_cases import CASES, reference_draw, sampling_case
from tests.unit.common.test_common_sampling import _backend, _prompts, peaked  # noqa: F401  (fixture)

pytest.importorskip("triton", reason="the kernel's tests need Triton (its interpreter on CPU): the dev extra has it")
if os.environ.get("TRITON_INTERPRET") != "1":  # tests/conftest.py sets it where no CUDA GPU is
    pytest.skip("a CUDA machine: tests/gpu/test_gpu_sampling_kernel.py runs the compiled kernel", allow_module_level=True)


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """64 lanes: a 700-token vocabulary spans 11 blocks, three noise draws of four blocks each, the last partial."""
    from components.common import sampling_kernel

    monkeypatch.setattr(sampling_kernel, "BLOCK", 64)


@pytest.mark.parametrize("case, scale, quantise, top_p", CASES)
def test_kernel_draws_the_explicit_nucleus_token_for_token(case, scale, quantise, top_p):
    from components.common.sampling_kernel import fused_sample

    logits, u, banned, done = sampling_case(scale, quantise, rows=48, vocab=700)
    got, logp = fused_sample(logits, temperature=0.7, top_p=top_p, uniforms=u, suppress_mask=banned, done=done,
                             pad_id=99, greedy_every=17, logprobs=True)
    want, first = reference_draw(logits, u, temperature=0.7, top_p=top_p, banned=banned, done=done, pad_id=99,
                                 greedy_every=17)
    assert torch.equal(got, want), (case, (got != want).nonzero().flatten().tolist())
    live = ~done
    assert set(got[done].tolist()) == {99} and not banned[got[live]].any()
    assert torch.equal(got[[0, 17, 34]], logits[[0, 17, 34]].masked_fill(banned, float("-inf")).argmax(-1))
    if top_p < 1.0:  # the rejection path really ran
        sampled = live & (torch.arange(48) % 17 != 0)
        assert (first[sampled] != got[sampled]).any(), case
    # log-probabilities: over the whole vocabulary at temperature T, before suppression and top-p; 0 when finished
    ref = torch.log_softmax(logits / 0.7, -1).gather(1, got.clamp(max=699)[:, None]).squeeze(1)
    assert torch.allclose(logp[live], ref[live], atol=1e-5) and bool((logp[done] == 0).all())


def test_kernel_generator_draws_follow_the_nucleus_distribution():
    from components.common.sampling_kernel import fused_sample

    probs = torch.tensor([0.6, 0.3, 0.1, 0.0001])
    logits = probs.log().expand(500, -1).contiguous()  # one draw per row (rows are the interpreter's slow axis)
    seed = torch.tensor([1234])
    t = fused_sample(logits, temperature=1.0, top_p=0.8, seed=seed)
    # renormalised 0.6 / 0.9 (tolerance ~4 standard errors of 500 draws)
    assert set(t.tolist()) == {0, 1} and abs((t == 0).float().mean().item() - 2 / 3) < 0.08
    assert torch.equal(fused_sample(logits, temperature=1.0, top_p=0.8, seed=seed), t)  # same seed, same draws
    banned = torch.tensor([True, False, False, False])
    t = fused_sample(logits, temperature=1.0, top_p=1.0, seed=seed + 1, suppress_mask=banned)
    assert 0 not in set(t.tolist()) and abs((t == 1).float().mean().item() - 0.3 / 0.4001) < 0.08


def test_generate_with_the_kernel_against_the_torch_sampler(peaked):  # noqa: F811
    """Same greedy rows and their log-probabilities; sampled rows never hold suppressed tokens; the static-shape
    (CUDA-graph) decode equals the dynamic one with the kernel too."""
    from components.common.sampling import shared_prefix_generate

    model, _ = peaked
    be = _backend(peaked)
    enc = dict(be._encode(_prompts()[:3]))
    kw = {"n": 4, "greedy_row": True, "max_new_tokens": 10, "eos_ids": (), "pad_id": be.pad_id,
          "suppress_ids": be.suppress_ids, "image_token_id": be.image_token_id, "logprobs": True}
    ops, ops_lp = shared_prefix_generate(model, dict(enc), generator=torch.Generator().manual_seed(0),
                                         fused_sampling=False, **kw)
    fused, fused_lp = shared_prefix_generate(model, dict(enc), generator=torch.Generator().manual_seed(0),
                                             fused_sampling=True, **kw)
    assert torch.equal(fused[:, 0], ops[:, 0])  # the greedy rows
    assert torch.allclose(fused_lp[:, 0], ops_lp[:, 0], atol=1e-5)
    assert not torch.isin(fused, torch.tensor(be.suppress_ids)).any()
    assert len(set(map(tuple, fused[:, 1:].reshape(-1, 10).tolist()))) > 8  # the samples vary
    static = shared_prefix_generate(model, dict(enc), generator=torch.Generator().manual_seed(0), cuda_graph=True,
                                    fused_sampling=True, **kw)
    assert torch.equal(static[0], fused)


def test_packed_decode_with_the_new_token_kernel_equals_the_torch_join(peaked, monkeypatch):  # noqa: F811
    """The packed layout (through the variable-length kernel's plain-torch interface on CPU) decodes the same tokens
    whether its new tokens' part and the join run in one kernel (`suffix_attention_merged`) or as the variable-length
    kernel and torch ops."""
    from components.common import sampling

    monkeypatch.setattr(sampling, "_varlen_kernel", lambda device, dtype: sampling.varlen_attention_reference)
    model, _ = peaked
    be = _backend(peaked)
    enc = dict(be._encode(_prompts()[:3]))
    kw = {"n": 4, "greedy_row": True, "max_new_tokens": 8, "eos_ids": (), "pad_id": be.pad_id,
          "suppress_ids": be.suppress_ids, "image_token_id": be.image_token_id, "fused_sampling": False}
    ops = sampling.shared_prefix_generate(model, dict(enc), generator=torch.Generator().manual_seed(0), **kw)
    monkeypatch.setattr(sampling, "_fused_suffix", lambda device: True)
    merged = sampling.shared_prefix_generate(model, dict(enc), generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(merged, ops)


@pytest.mark.parametrize("groups, hkv, d, dtype", [(7, 2, 16, torch.bfloat16), (3, 3, 20, torch.float32)])
def test_suffix_attention_merged_equals_flash_reference_then_merge(groups, hkv, d, dtype):
    """The one-kernel new-token part: each row's folded queries over its own first used[r] new tokens (0, partial
    and full blocks, the whole buffer), joined with the prompt part and unfolded, against the plain-torch variable-
    length attention (`varlen_attention_reference`, what FlashAttention computes) and `merge_attention_parts`."""
    from components.common import sampling_kernel
    from components.common.sampling import merge_attention_parts, varlen_attention_reference

    g = torch.Generator().manual_seed(1)
    r, s, scale = 5, 40, d**-0.5
    q = (torch.randn(r * groups, hkv, d, generator=g) * 2).to(dtype)
    keys, values = ((torch.randn(r, s, hkv, d, generator=g) * 2).to(dtype) for _ in range(2))
    used = torch.tensor([0, 1, 16, 17, s], dtype=torch.int32)
    out_p = torch.randn(r * groups, hkv, d, generator=g).to(dtype)
    lse_p = (torch.randn(r * groups, hkv, generator=g) * 3).T.contiguous().T  # transposed, as FlashAttention's
    got = sampling_kernel.suffix_attention_merged(q, keys, values, used, out_p, lse_p, scale, groups, block_n=16)

    cu_rows = torch.arange(0, r * groups + 1, groups, dtype=torch.int32)
    cu_keys = torch.arange(0, r * s + 1, s, dtype=torch.int32)
    out_s, lse_s = varlen_attention_reference(q, keys.reshape(r * s, hkv, d), values.reshape(r * s, hkv, d), cu_rows,
                                              cu_keys, groups, s, scale, used_k=used)
    want = merge_attention_parts(out_p, lse_p, out_s.float(), lse_s).float()
    want = want.reshape(r, groups, hkv, d).transpose(1, 2).reshape(r, hkv * groups, d)
    assert got.shape == (r, hkv * groups, d) and got.dtype == dtype
    prompt_only = out_p[:groups].transpose(0, 1).reshape(hkv * groups, d)  # row 0 has no new token yet
    assert torch.equal(got[0], prompt_only)
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-5  # bf16: the probabilities enter the value product in bf16
    assert (got.float() - want).abs().max() <= tol * want.abs().max()
