"""Decode-attention test inputs shared by the CPU and GPU tests of the sampler's attention: R = B×rows sequences whose
keys are their prompt's (left-padded) followed by their own new tokens (only the first `written` of `s` written; the
rest hold values that must not leak in), and the expected output: SDPA in fp32 over each row's explicit keys."""

from __future__ import annotations


def decode_attention_case(dtype, device="cpu", *, b=3, rows=4, hkv=2, grp=3, d=16, length=7, s=5, written=3,
                          padding=None):
    """(q, prompt_k, prompt_v, prompt_mask, suffix_k, suffix_v, rows, written), expected. `padding`: {prompt: left
    padding}; by default prompts 0 and 2 are padded by 3 and 1 positions."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator(device=device).manual_seed(0)
    r, hq = b * rows, hkv * grp

    def rand(*shape):
        return torch.randn(*shape, generator=g, device=device).to(dtype)

    q, pk, pv, sk, sv = rand(r, hq, d), rand(b, hkv, length, d), rand(b, hkv, length, d), rand(r, hkv, s, d), rand(r, hkv, s, d)
    pmask = torch.ones(b, length, dtype=torch.bool, device=device)
    for prompt, pad in (padding or {0: 3, 2: 1}).items():
        pmask[prompt, :pad] = False
    keys = torch.cat([pk.repeat_interleave(rows, 0), sk], 2).repeat_interleave(grp, 1).float()  # (R, Hq, L+S, D)
    values = torch.cat([pv.repeat_interleave(rows, 0), sv], 2).repeat_interleave(grp, 1).float()
    mask = torch.cat([pmask.repeat_interleave(rows, 0), (torch.arange(s, device=device) < written).expand(r, s)], 1)
    want = F.scaled_dot_product_attention(q.float()[:, :, None], keys, values, attn_mask=mask[:, None, None, :])[:, :, 0]
    return (q, pk, pv, pmask, sk, sv, rows, written), want


def fill_packed_cache(cache, sk, sv, written: int, static: bool):
    """Write the first `written` new tokens of every row into a packed-layout decode cache the way the decode does
    (dynamic mode, or static mode with the position on the device), and garbage after them."""
    import torch

    for t in range(written):
        if static:
            cache.write_pos, cache.view_len = torch.tensor([t], device=sk.device), sk.shape[2]
        cache.update(sk[:, :, t : t + 1], sv[:, :, t : t + 1], 0)
    cache.keys[0][:, written:] = sk.transpose(1, 2)[:, written:]
    cache.values[0][:, written:] = sv.transpose(1, 2)[:, written:]
