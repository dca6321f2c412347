"""The shared-prefix decode's attention on a CUDA GPU, bf16, against SDPA in fp32 over every row's full keys: the
padded layout's batched-matmul cascade (fp32 scores from the GPU's bmm) and the packed layout through torch's
FlashAttention variable-length kernel (run with `make test-gpu`)."""

from __future__ import annotations

import pytest

from tests.attention_cases import decode_attention_case, fill_packed_cache

SHAPE = {"b": 4, "rows": 17, "hkv": 4, "grp": 7, "d": 128, "length": 300, "s": 64, "written": 37}  # a diagnosis batch's 17 rows, 7B heads


@pytest.mark.gpu
def test_cascade_attention_on_gpu_equals_sdpa_over_each_rows_keys():
    import torch

    from components.common import sampling
    from components.common.sampling import cascade_attention

    (q, pk, pv, pmask, sk, sv, _, written), want = decode_attention_case(torch.bfloat16, "cuda", **SHAPE,
                                                                         padding={1: 40})
    s, d = sk.shape[2], q.shape[-1]
    pbias = torch.zeros(pmask.shape, device="cuda").masked_fill(~pmask, float("-inf"))
    sbias = torch.zeros(s, device="cuda").masked_fill(torch.arange(s, device="cuda") >= written, float("-inf"))
    got = cascade_attention(q, pk, pv, pbias, sk, sv, sbias, d**-0.5)
    assert sampling._FP32_SCORES_BMM is not None  # the bf16-in, fp32-out bmm was tried on this GPU
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("fused_suffix", [False, True])
@pytest.mark.parametrize("static", [False, True])
def test_flash_varlen_cascade_on_gpu_equals_sdpa_over_each_rows_keys(static, fused_suffix):
    # The packed layout through torch's FlashAttention variable-length kernel (what every sampler on this GPU runs),
    # left padding (a one-token prompt among them) and unwritten positions holding garbage; the count of written
    # positions lives on the device. The new tokens' part by FlashAttention joined by torch ops, or with the join in one
    # kernel (`suffix_attention_merged`).
    import torch

    from components.common.sampling import (
        _PrefixCache,
        _varlen_kernel,
        varlen_cascade_attention,
    )

    kernel = _varlen_kernel(torch.device("cuda"), torch.bfloat16)
    assert kernel is not None, "FlashAttention's variable-length kernel did not run on this GPU"
    (q, pk, pv, pmask, sk, sv, rows, written), want = decode_attention_case(torch.bfloat16, "cuda", **SHAPE,
                                                                            padding={1: 40, 3: 299})
    cache = _PrefixCache([(pk, pv)], pmask, rows, sk.shape[2], varlen=kernel, fused_suffix=fused_suffix)
    fill_packed_cache(cache, sk, sv, written, static)
    got = varlen_cascade_attention(q, cache, 0, q.shape[-1] ** -0.5)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2)
