"""Batched dense forward of a Qwen2.5-VL vision tower for images that all share one patch grid.

The Hugging Face tower packs every image of a batch into one long token sequence and, without flash-attn, runs
attention once per window / per image chunk (thousands of small SDPA calls per batch at 224 px). When every image
has the same grid (MedMNIST at a fixed `image_size`) and every attention window holds the same number of tokens,
the same computation is a handful of large dense calls:

- patch embedding: the Conv3d has kernel == stride == the patch, i.e. one matmul with its weight viewed 2-D;
- window order, rotary cos/sin and full/windowed layer pattern are computed ONCE per grid (a `TowerPlan`);
- windowed layers: tokens viewed as (images x windows, heads, window_len, head_dim) -> one SDPA call;
- full-attention layers: (images, heads, tokens, head_dim) -> one SDPA call;
- optional `torch.compile` of the block function (weights passed as tensors, so one graph serves every layer).

No weights are copied: every parameter is read from the HF module (`visual.blocks[i].attn.qkv.weight`, ...).
`tests/unit/probe/test_probe_fast_tower.py` checks the result equals the HF tower's on CPU.

    plan = make_plan(visual, grid_h=16, grid_w=16)              # None when the shapes need the HF path
    feats = fast_pooled_features(visual, pixel_values, plan, pooling="mean")   # (B, out_hidden_size)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

_ACTS = {
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
}


@dataclass
class TowerPlan:
    """Everything about the tower's forward that depends only on the grid, computed once per grid shape."""

    grid_h: int
    grid_w: int
    seq_len: int  # patches per image
    unit: int  # patches per merged token (spatial_merge_size ** 2)
    window_perm: torch.Tensor  # (seq_len // unit,) merged-token index in window order
    window_inv: torch.Tensor  # inverse permutation (back to the processor's order)
    n_windows: int
    cos: torch.Tensor  # (seq_len, 1, head_dim) float32, window order
    sin: torch.Tensor
    full_layers: tuple[bool, ...]  # per block: full attention (True) or windowed
    heads: int
    act: Any


def window_index(grid_h: int, grid_w: int, merge: int, window_size: int, patch_size: int) -> tuple[torch.Tensor, list[int]]:
    """Merged-token order and window lengths (in merged tokens) of one image, as Qwen2.5-VL defines them."""
    vws = window_size // merge // patch_size
    lh, lw = grid_h // merge, grid_w // merge
    index = torch.arange(lh * lw).reshape(1, lh, lw)
    pad_h, pad_w = vws - lh % vws, vws - lw % vws
    nwh, nww = (lh + pad_h) // vws, (lw + pad_w) // vws
    padded = F.pad(index, (0, pad_w, 0, pad_h), "constant", -100)
    padded = padded.reshape(1, nwh, vws, nww, vws).permute(0, 1, 3, 2, 4).reshape(nwh * nww, vws, vws)
    lengths = [int(n) for n in (padded != -100).sum([1, 2]).tolist() if n > 0]
    flat = padded.reshape(-1)
    return flat[flat != -100], lengths


def _vision_config(visual):
    return visual.config


def make_plan(visual, grid_h: int, grid_w: int, device: torch.device | str | None = None) -> TowerPlan | None:
    """The batched plan for images of `grid_h x grid_w` patches, or None when the fast path does not apply
    (unequal window sizes, an activation or layout this module does not know)."""
    cfg = _vision_config(visual)
    act = _ACTS.get(getattr(cfg, "hidden_act", "silu"))
    merge = int(cfg.spatial_merge_size)
    if act is None or grid_h % merge or grid_w % merge:
        return None
    if visual.patch_embed.proj.bias is not None:
        return None
    perm, lengths = window_index(grid_h, grid_w, merge, int(cfg.window_size), int(cfg.patch_size))
    if len(set(lengths)) != 1:
        return None
    device = torch.device(device) if device is not None else visual.patch_embed.proj.weight.device
    unit = merge * merge
    seq_len = grid_h * grid_w
    # Rotary angles: (h, w) position of every patch in the processor's merge-block order, then window order.
    hpos, wpos = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    block = (grid_h // merge, merge, grid_w // merge, merge)
    hpos = hpos.reshape(block).transpose(1, 2).flatten()
    wpos = wpos.reshape(block).transpose(1, 2).flatten()
    inv_freq = visual.rotary_pos_emb.inv_freq.detach().float().cpu()
    freqs = torch.cat([hpos[:, None].float() * inv_freq, wpos[:, None].float() * inv_freq], dim=-1)
    emb = torch.cat([freqs, freqs], dim=-1)  # (seq_len, head_dim)
    emb = emb.reshape(seq_len // unit, unit, -1)[perm].reshape(seq_len, -1)
    full = set(int(i) for i in cfg.fullatt_block_indexes)
    return TowerPlan(
        grid_h=grid_h,
        grid_w=grid_w,
        seq_len=seq_len,
        unit=unit,
        window_perm=perm.to(device),
        window_inv=torch.argsort(perm).to(device),
        n_windows=len(lengths),
        cos=emb.cos()[:, None, :].to(device),
        sin=emb.sin()[:, None, :].to(device),
        full_layers=tuple(i in full for i in range(len(visual.blocks))),
        heads=int(visual.blocks[0].attn.num_heads),
        act=act,
    )


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return w * x.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def block_forward(
    x: torch.Tensor,  # (B, S, D), tokens in window order
    n1: torch.Tensor,
    qkv_w: torch.Tensor,
    qkv_b: torch.Tensor | None,
    proj_w: torch.Tensor,
    proj_b: torch.Tensor | None,
    n2: torch.Tensor,
    gate_w: torch.Tensor,
    gate_b: torch.Tensor | None,
    up_w: torch.Tensor,
    up_b: torch.Tensor | None,
    down_w: torch.Tensor,
    down_b: torch.Tensor | None,
    cos: torch.Tensor,
    sin: torch.Tensor,
    n_windows: int,
    heads: int,
    eps: float,
    act: Any,
) -> torch.Tensor:
    """One Qwen2.5-VL vision block over a batch of same-grid images; n_windows == 1 is full attention."""
    B, S, D = x.shape
    hd = D // heads
    h = _rms(x, n1, eps)
    q, k, v = F.linear(h, qkv_w, qkv_b).view(B, S, 3, heads, hd).unbind(2)
    dtype = q.dtype
    qf, kf = q.float(), k.float()
    q = (qf * cos + _rotate_half(qf) * sin).to(dtype)
    k = (kf * cos + _rotate_half(kf) * sin).to(dtype)
    L = S // n_windows

    def split(t):  # (B, S, H, hd) -> (B * n_windows, H, L, hd)
        return t.view(B, n_windows, L, heads, hd).permute(0, 1, 3, 2, 4).reshape(B * n_windows, heads, L, hd)

    o = F.scaled_dot_product_attention(split(q), split(k), split(v), scale=hd**-0.5)
    o = o.view(B, n_windows, heads, L, hd).permute(0, 1, 3, 2, 4).reshape(B, S, D)
    x = x + F.linear(o, proj_w, proj_b)
    h = _rms(x, n2, eps)
    h = act(F.linear(h, gate_w, gate_b)) * F.linear(h, up_w, up_b)
    return x + F.linear(h, down_w, down_b)


_COMPILED: dict[str, Any] = {}


def _block_fn(compile: bool):
    if not compile:
        return block_forward
    if "block" not in _COMPILED:
        _COMPILED["block"] = torch.compile(block_forward, dynamic=False, fullgraph=True)
    return _COMPILED["block"]


def fast_tokens(visual, pixel_values: torch.Tensor, plan: TowerPlan, *, compile: bool = False, reorder: bool = True) -> torch.Tensor:
    """Merged visual tokens (B, S // unit, out_hidden_size) for `pixel_values` of B same-grid images, as the
    processor lays them out ((B * S, C * T * P * P)). `reorder=False` leaves them in window order (pooling does
    not care about order)."""
    w = visual.patch_embed.proj.weight
    D = w.shape[0]
    B = pixel_values.shape[0] // plan.seq_len
    if B * plan.seq_len != pixel_values.shape[0]:
        raise ValueError(f"pixel_values has {pixel_values.shape[0]} patches, not a multiple of {plan.seq_len} per image")
    x = F.linear(pixel_values.to(w.dtype), w.reshape(D, -1))  # Conv3d with kernel == stride == patch
    x = x.view(B, plan.seq_len // plan.unit, plan.unit, D)[:, plan.window_perm].reshape(B, plan.seq_len, D)
    fn = _block_fn(compile)
    for blk, full in zip(visual.blocks, plan.full_layers):
        a, m = blk.attn, blk.mlp
        x = fn(
            x,
            blk.norm1.weight,
            a.qkv.weight,
            a.qkv.bias,
            a.proj.weight,
            a.proj.bias,
            blk.norm2.weight,
            m.gate_proj.weight,
            m.gate_proj.bias,
            m.up_proj.weight,
            m.up_proj.bias,
            m.down_proj.weight,
            m.down_proj.bias,
            plan.cos,
            plan.sin,
            1 if full else plan.n_windows,
            plan.heads,
            float(blk.norm1.variance_epsilon),
            plan.act,
        )
    merged = visual.merger(x).view(B, plan.seq_len // plan.unit, -1)
    return merged[:, plan.window_inv] if reorder else merged


def pool(tokens: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, N, C) -> (B, C) by mean or max over the N merged tokens."""
    if pooling == "mean":
        return tokens.mean(dim=1)
    if pooling == "max":
        return tokens.amax(dim=1)
    raise ValueError(f"pooling={pooling!r} is not known; choose 'mean' or 'max'")


def fast_pooled_features(visual, pixel_values: torch.Tensor, plan: TowerPlan, pooling: str = "mean", *, compile: bool = False) -> torch.Tensor:
    """Pooled (B, out_hidden_size) features of B same-grid images through the batched dense path."""
    return pool(fast_tokens(visual, pixel_values, plan, compile=compile, reorder=False), pooling)


def hf_tokens(visual, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
    """The HF tower's merged tokens, flat (sum of tokens, out_hidden_size), across transformers 4.x / 5.x outputs."""
    out = visual(pixel_values.to(visual.patch_embed.proj.weight.dtype), grid_thw=grid_thw)
    return out.pooler_output if hasattr(out, "pooler_output") else out


def hf_pooled_features(visual, pixel_values: torch.Tensor, grid_thw: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """Pooled features through the stock HF tower (any grids): split per image, then pool."""
    tokens = hf_tokens(visual, pixel_values, grid_thw)
    unit = int(_vision_config(visual).spatial_merge_size) ** 2
    sizes = (grid_thw.prod(-1) // unit).tolist()
    return torch.stack([pool(t[None], pooling)[0] for t in torch.split(tokens, sizes)])
