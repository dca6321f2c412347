"""One attention call per layer in Qwen2.5-VL's windowed vision tower (sdpa).

    from components.common.vision_attention import batch_window_attention
    batch_window_attention(model)     # load_model_and_processor does this for every model it opens

With `attn_implementation="sdpa"` transformers runs the vision tower's attention one window at a time: every layer
reads the window lengths back to the host (`cu_seqlens.tolist()`, a device synchronisation) and calls attention once
per window. A 448 px image has 16 windows, so one image costs 28 x 16 + 4 = 452 attention calls and 32
synchronisations; a batch of 64 images ~29k calls. On a GPU that host work, not the arithmetic, sets the time of every
prefill (diagnosis, labeller, GRPO rollout and the training forward).

The batched forward computes the same thing with one `scaled_dot_product_attention` per layer: equal-length windows
(the common case) are a reshape into a batch of windows; windows of unequal length (images whose sides are not a
multiple of the window) are gathered into a zero-padded batch with a key mask and scattered back. The windows' layout
is read to the host once per forward (it is stored on the `cu_seqlens` tensor the vision model hands to every layer),
not once per layer. Flash-attention (which takes `cu_seqlens` itself) and eager are left as they are.

Tested on CPU against the stock forward (outputs and gradients, equal and unequal windows, several images).
The probe step's `components.probe.fast_tower` goes further for its special case (every image on one patch grid:
the whole tower as a few dense calls, planned once per grid); this module is the general case, any mix of image
sizes, one attention module at a time, for every other step.
"""

from __future__ import annotations

import logging
import sys
import types

log = logging.getLogger(__name__)

CLASSES = ("Qwen2_5_VLVisionAttention",)
_LAYOUT = "_medbridge_window_layout"


def batch_window_attention(model) -> int:
    """Give every sdpa vision-attention module of `model` the batched forward; returns how many it changed."""
    changed = 0
    for m in model.modules():
        if type(m).__name__ not in CLASSES or is_batched_window_attention(m):
            continue
        if getattr(m.config, "_attn_implementation", None) != "sdpa":
            continue
        rotary = getattr(sys.modules[type(m).__module__], "apply_rotary_pos_emb_vision", None)
        if rotary is None or not all(hasattr(m, a) for a in ("qkv", "proj", "num_heads", "scaling")):
            log.warning("%s: not the layout this transformers version was written for; left per-window",
                        type(m).__name__)
            continue
        m._medbridge_rotary = rotary
        m.forward = types.MethodType(_batched_forward, m)
        changed += 1
    return changed


def window_layout(cu_seqlens):
    """(windows, longest, gather index or None, key mask or None, scatter index or None) of `cu_seqlens`, read to the
    host once and kept on the tensor (the vision model passes the same tensor to every layer)."""
    layout = getattr(cu_seqlens, _LAYOUT, None)
    if layout is not None:
        return layout
    import torch

    bounds = cu_seqlens.tolist()
    spans = [(a, b - a) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    n, longest = len(spans), max(length for _, length in spans)
    if all(length == longest for _, length in spans) and spans[0][0] == 0:
        layout = (n, longest, None, None, None)
    else:
        starts = torch.tensor([a for a, _ in spans])
        lengths = torch.tensor([length for _, length in spans])
        offsets = torch.arange(longest)
        valid = offsets[None, :] < lengths[:, None]
        gather = torch.where(valid, starts[:, None] + offsets[None, :], starts[:, None]).flatten()
        scatter = valid.flatten().nonzero().squeeze(1)
        dev = cu_seqlens.device
        layout = (n, longest, gather.to(dev), valid[:, None, None, :].to(dev), scatter.to(dev))
    setattr(cu_seqlens, _LAYOUT, layout)
    return layout


def _batched_forward(self, hidden_states, cu_seqlens, rotary_pos_emb=None, position_embeddings=None, **kwargs):
    import torch
    import torch.nn.functional as F

    seq = hidden_states.shape[0]
    q, k, v = self.qkv(hidden_states).reshape(seq, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    if position_embeddings is None:  # older transformers hand the block the raw rotary angles
        emb = torch.cat((rotary_pos_emb, rotary_pos_emb), dim=-1)
        position_embeddings = (emb.cos(), emb.sin())
    q, k = self._medbridge_rotary(q, k, *position_embeddings)
    n, longest, gather, mask, scatter = window_layout(cu_seqlens)
    heads, dim = q.shape[1], q.shape[2]
    if gather is None:
        q, k, v = (t.reshape(n, longest, heads, dim).transpose(1, 2) for t in (q, k, v))
    else:
        q, k, v = (t.index_select(0, gather).view(n, longest, heads, dim).transpose(1, 2) for t in (q, k, v))
    dropout = self.attention_dropout if self.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=self.scaling)
    out = out.transpose(1, 2).reshape(n * longest, heads * dim)
    if scatter is not None:
        out = out.index_select(0, scatter)
    return self.proj(out)


def is_batched_window_attention(module) -> bool:
    return getattr(module.__dict__.get("forward"), "__func__", None) is _batched_forward


def per_window_attention(model) -> int:
    """Undo `batch_window_attention` (the stock per-window forward again): for benchmarks that compare the two."""
    restored = 0
    for m in model.modules():
        if is_batched_window_attention(m):
            del m.forward
            restored += 1
    return restored
