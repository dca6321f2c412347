"""The shared-prefix decode's attention on a CUDA GPU: bf16 inputs, fp32 scores from the GPU's bmm, equal to SDPA over
every row's full keys (run with `make test-gpu`)."""

from __future__ import annotations

import pytest


@pytest.mark.gpu
def test_cascade_attention_on_gpu_equals_sdpa_over_each_rows_keys():
    import torch
    import torch.nn.functional as F

    from components.common import sampling
    from components.common.sampling import cascade_attention

    g = torch.Generator(device="cuda").manual_seed(0)
    b, rows, hkv, grp, d, length, s = 4, 17, 4, 7, 128, 300, 64
    r, hq = b * rows, hkv * grp

    def rand(*shape):
        return torch.randn(*shape, generator=g, device="cuda").to(torch.bfloat16)

    q, pk, pv = rand(r, hq, d), rand(b, hkv, length, d), rand(b, hkv, length, d)
    sk, sv = rand(r, hkv, s, d), rand(r, hkv, s, d)
    pmask = torch.ones(b, length, dtype=torch.bool, device="cuda")
    pmask[1, :40] = False
    pbias = torch.zeros(b, length, device="cuda").masked_fill(~pmask, float("-inf"))
    written = 37
    sbias = torch.zeros(s, device="cuda").masked_fill(torch.arange(s, device="cuda") >= written, float("-inf"))
    got = cascade_attention(q, pk, pv, pbias, sk, sv, sbias, d**-0.5)
    assert sampling._FP32_SCORES_BMM is not None  # the bf16-in, fp32-out bmm was tried on this GPU
    keys = torch.cat([pk.repeat_interleave(rows, 0), sk], 2).repeat_interleave(grp, 1)
    values = torch.cat([pv.repeat_interleave(rows, 0), sv], 2).repeat_interleave(grp, 1)
    mask = torch.cat([pmask.repeat_interleave(rows, 0), (torch.arange(s, device="cuda") < written).expand(r, s)], 1)
    want = F.scaled_dot_product_attention(q.float()[:, :, None], keys.float(), values.float(),
                                          attn_mask=mask[:, None, None, :])[:, :, 0]
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("static", [False, True])
def test_flash_varlen_cascade_on_gpu_equals_sdpa_over_each_rows_keys(static):
    # The packed layout through torch's FlashAttention variable-length kernel (what every sampler on this GPU runs),
    # left padding and unwritten positions holding garbage; the count of written positions lives on the device.
    import torch
    import torch.nn.functional as F

    from components.common.sampling import (
        _PrefixCache,
        _varlen_kernel,
        varlen_cascade_attention,
    )

    dev = torch.device("cuda")
    kernel = _varlen_kernel(dev, torch.bfloat16)
    assert kernel is not None, "FlashAttention's variable-length kernel did not run on this GPU"
    g = torch.Generator(device="cuda").manual_seed(0)
    b, rows, hkv, grp, d, length, s, written = 4, 17, 4, 7, 128, 300, 64, 37
    r, hq = b * rows, hkv * grp

    def rand(*shape):
        return torch.randn(*shape, generator=g, device="cuda").to(torch.bfloat16)

    q, pk, pv, sk, sv = rand(r, hq, d), rand(b, hkv, length, d), rand(b, hkv, length, d), rand(r, hkv, s, d), rand(r, hkv, s, d)
    pmask = torch.ones(b, length, dtype=torch.bool, device="cuda")
    pmask[1, :40] = False
    pmask[3, :299] = False  # a one-token prompt
    cache = _PrefixCache([(pk, pv)], pmask, rows, s, varlen=kernel)
    for t in range(written):
        if static:
            cache.write_pos, cache.view_len = torch.tensor([t], device="cuda"), s
        cache.update(sk[:, :, t : t + 1], sv[:, :, t : t + 1], 0)
    cache.keys[0][:, written:] = sk.transpose(1, 2)[:, written:]
    cache.values[0][:, written:] = sv.transpose(1, 2)[:, written:]
    got = varlen_cascade_attention(q, cache, 0, d**-0.5)
    keys = torch.cat([pk.repeat_interleave(rows, 0), sk], 2).repeat_interleave(grp, 1)
    values = torch.cat([pv.repeat_interleave(rows, 0), sv], 2).repeat_interleave(grp, 1)
    mask = torch.cat([pmask.repeat_interleave(rows, 0), (torch.arange(s, device="cuda") < written).expand(r, s)], 1)
    want = F.scaled_dot_product_attention(q.float()[:, :, None], keys.float(), values.float(),
                                          attn_mask=mask[:, None, None, :])[:, :, 0]
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2)
