"""Fast constrained-choice scoring with a Qwen2.5-VL model: prompts (image included) and every candidate answer in
ONE forward pass per batch.

The stock path (`ModalityLabeller.score_batch`) runs a prompt forward, repeats its KV cache once per candidate and
runs a second, candidate forward. Here each row of a batch is laid out as

    [prompt tokens, image tokens included, right-padded to L] [the tokens of all C candidates, concatenated: T]

and the decoder attends in two calls per layer: the prompt part causally with no mask (right padding: a real token
never sees the padding after it, so sdpa may take its flash kernel), and the T candidate tokens against their row's
prompt and the earlier tokens of their OWN candidate only (a small masked call). Every candidate is therefore
scored exactly as if it were the only answer. Grouped-query attention (Qwen2.5-VL-32B: 40 query heads, 8 KV heads)
never repeats K/V per query head: the prompt call reads the KV heads as they are (sdpa's `enable_gqa`, which its
flash kernel runs), and the candidate call folds the query heads sharing a KV head into its query axis, (B, KV
heads, heads per KV head x T, head_dim), with the mask repeated to match. Both calls write one (B, S, heads,
head_dim) output, the out-projection's input. The log-likelihood of candidate c is the sum of log p(token | prompt,
earlier tokens of c) over its tokens, read from logits at T gathered positions per row (no logits for the prompt,
no KV cache).

The work is split so that the accelerator waits for nothing:
- CPU (`prepare_batch`, run by preprocessing threads ahead of the GPU): image decoding and the checkpoint's own
  processor, the multimodal RoPE positions, the vision tower's window plan and padding indices, the candidate
  layout; all plain tensors, pinned and copied asynchronously.
- GPU (`score_prepared`): the vision tower with all attention windows (or all images) of a batch in ONE attention
  call per layer (the stock sdpa path makes one call per window), the decoder layers, the gathered logits; one host
  sync per batch (the scores).

Weights are read from the Hugging Face modules (nothing is copied); `compile=True` runs the vision block and the
decoder layer through `torch.compile` (one graph each, shared by every layer, dynamic shapes); `liger_kernels=True`
runs their RMSNorms (Liger's "llama" casting mode: Qwen2's rounding), SiLU-mul and rotary embeddings (the text
rotary with the mrope sections already merged per token, the vision rotary in float32) through Liger's Triton
kernels (CUDA only; imported only then). `tests/unit/curate/test_curate_scoring.py` checks on CPU that the scores
equal the stock path's and the decoder layer a plain reference with repeated K/V; `tests/gpu/test_gpu_labeller.py`
the bf16 path, Liger's kernels included, on a GPU.

    spec = ScoringSpec.from_model(model, processor, candidates)
    batch = prepare_batch([(image, templated_text), ...], processor, spec)     # CPU
    scores = score_prepared(model, to_device(batch, model.device))             # (B, C) log-likelihoods
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

_ACTS = {"silu": F.silu, "gelu": F.gelu, "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh")}

# --------------------------------------------------------------------------------------------------------------
# CPU side: what a batch needs, as plain tensors
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoringSpec:
    """What `prepare_batch` needs besides the items (small, immutable)."""

    cand_ids: tuple[tuple[int, ...], ...]  # token ids of each candidate answer, end-of-turn token included
    pad_id: int
    image_token_id: int
    merge: int  # spatial_merge_size of the vision tower
    window: int  # attention window side in merged tokens (window_size // merge // patch_size)
    pixel_dtype: str = "float32"  # dtype pixel values are handed over in (the model's: bf16 on GPU halves the copy)

    @classmethod
    def from_model(cls, model, processor, candidates: tuple[str, ...], pixel_dtype: str | None = None) -> ScoringSpec:
        tok = processor.tokenizer
        end = tok.convert_tokens_to_ids("<|im_end|>")
        cand_ids = tuple(tuple(tok(c, add_special_tokens=False)["input_ids"]) + (end,) for c in candidates)
        vcfg = model.config.vision_config
        merge = int(vcfg.spatial_merge_size)
        if pixel_dtype is None:
            pixel_dtype = str(model.model.visual.patch_embed.proj.weight.dtype).removeprefix("torch.")
        return cls(
            cand_ids=cand_ids,
            pad_id=tok.pad_token_id if tok.pad_token_id is not None else end,
            image_token_id=int(model.config.image_token_id),
            merge=merge,
            window=int(vcfg.window_size) // merge // int(vcfg.patch_size),
            pixel_dtype=pixel_dtype,
        )

    @property
    def n_cand_tokens(self) -> int:
        return sum(len(c) for c in self.cand_ids)


def plan_batches(lengths: list[int], token_budget: int, extra: int = 0) -> list[list[int]]:
    """Indices of items grouped into batches of similar length, longest batch first.

    Items are sorted by length (descending; ties by index) and cut into consecutive runs whose padded size,
    rows x (longest length in the run + `extra`), stays within `token_budget`. A single item over the budget is a
    batch of its own. Sorting by length makes the padding of a batch small and lets short prompts share a batch.
    The first batch is the longest: a budget too large for the device fails at once, not hours later."""
    if token_budget < 1:
        raise ValueError(f"token_budget={token_budget} must be >= 1")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        width = (lengths[cur[0]] if cur else lengths[i]) + extra  # descending: the first item is the longest
        if cur and (len(cur) + 1) * width > token_budget:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def prompt_length(text_tokens: int, image_tokens: int) -> int:
    """Prompt length once the processor expands the one `<|image_pad|>` placeholder into the image's tokens."""
    return text_tokens - 1 + image_tokens


def mrope_positions(ids: np.ndarray, image_token_id: int, grid_thw: tuple[int, int, int], merge: int) -> np.ndarray:
    """Qwen2.5-VL multimodal RoPE positions (3, L) of one prompt holding one image block (as `get_rope_index`):
    text advances all three by 1; the image's (t, h, w) tokens sit at start + (0, row, col) over its merged grid;
    text after it resumes at start + max(merged rows, merged cols)."""
    ids = np.asarray(ids)
    where = np.flatnonzero(ids == image_token_id)
    t, gh, gw = (int(v) for v in grid_thw)
    lh, lw = gh // merge, gw // merge
    n = t * lh * lw
    if len(where) != n or (n and where[-1] - where[0] + 1 != n):
        raise ValueError(f"prompt holds {len(where)} image tokens, expected one block of {n} for grid {grid_thw}")
    pos = np.empty((3, len(ids)), dtype=np.int64)
    s = int(where[0]) if n else len(ids)
    pos[:, :s] = np.arange(s)
    if n:
        tt, hh, ww = np.meshgrid(np.arange(t), np.arange(lh), np.arange(lw), indexing="ij")
        pos[0, s : s + n] = s + tt.ravel()
        pos[1, s : s + n] = s + hh.ravel()
        pos[2, s : s + n] = s + ww.ravel()
        after = s + max(lh, lw)
        rest = len(ids) - (s + n)
        pos[:, s + n :] = after + np.arange(rest)
    return pos


def window_order(grid_h: int, grid_w: int, merge: int, window: int) -> tuple[np.ndarray, list[int]]:
    """Merged-token order of one image for windowed attention and the window lengths in merged tokens, as
    Qwen2.5-VL defines them: windows of `window` x `window` merged tokens in raster order, raster inside."""
    lh, lw = grid_h // merge, grid_w // merge
    order: list[np.ndarray] = []
    lengths: list[int] = []
    grid = np.arange(lh * lw).reshape(lh, lw)
    for r in range(0, lh, window):
        for c in range(0, lw, window):
            block = grid[r : r + window, c : c + window].ravel()
            order.append(block)
            lengths.append(len(block))
    return np.concatenate(order), lengths


def segment_plan(lengths: list[int]) -> dict[str, Any]:
    """Padding plan for attention over consecutive variable-length segments of a packed sequence.

    Equal lengths need none (the packed tensor is viewed as segments x length). Otherwise: `idx` (segments, Lmax)
    gathers each segment's tokens into a padded block (padding slots point at token 0: finite values, masked out as
    keys), `valid` marks the real slots (the key mask), and `unpad` lists the padded slots of the real tokens in
    packed order."""

    lens = np.asarray(lengths, dtype=np.int64)
    lmax = int(lens.max())
    if (lens == lmax).all():
        return {"n": len(lens), "lmax": lmax, "idx": None, "valid": None, "unpad": None}
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    ar = np.arange(lmax)
    valid = ar[None, :] < lens[:, None]
    idx = np.where(valid, starts[:, None] + ar[None, :], 0)
    return {
        "n": len(lens),
        "lmax": lmax,
        "idx": torch.from_numpy(idx),
        "valid": torch.from_numpy(valid)[:, None, None, :],
        "unpad": torch.from_numpy(np.flatnonzero(valid.ravel())),
    }


def candidate_layout(cand_ids: tuple[tuple[int, ...], ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flat token ids (T,), candidate of each token (T,), index of each token inside its candidate (T,))."""
    flat = np.array([t for c in cand_ids for t in c], dtype=np.int64)
    cand_of = np.array([i for i, c in enumerate(cand_ids) for _ in c], dtype=np.int64)
    within = np.array([j for c in cand_ids for j in range(len(c))], dtype=np.int64)
    return flat, cand_of, within


def prepare_batch(items: list[tuple[Any, str]], processor, spec: ScoringSpec) -> dict[str, Any]:
    """Everything the GPU forward of one batch needs, as CPU tensors. `items` are (PIL image, templated prompt
    text with one `<|image_pad|>` placeholder); the checkpoint's processor resizes and patchifies each image and
    expands the placeholder, exactly as in the stock path."""

    encs = [processor(text=[text], images=[image], return_tensors="np") for image, text in items]
    ids = [np.asarray(e["input_ids"][0], dtype=np.int64) for e in encs]
    grids = [tuple(int(v) for v in np.asarray(e["image_grid_thw"])[0]) for e in encs]
    lens = np.array([len(x) for x in ids], dtype=np.int64)
    b, length = len(items), int(lens.max())
    flat, cand_of, within = candidate_layout(spec.cand_ids)
    t = len(flat)
    s = length + t

    input_ids = np.full((b, s), spec.pad_id, dtype=np.int64)
    positions = np.zeros((3, b, s), dtype=np.int64)
    image_index: list[np.ndarray] = []
    for r, (row, grid) in enumerate(zip(ids, grids)):
        input_ids[r, : len(row)] = row
        pos = mrope_positions(row, spec.image_token_id, grid, spec.merge)
        positions[:, r, : len(row)] = pos
        positions[:, r, len(row) : length] = pos.max() + 1  # padding: any finite position (never attended)
        positions[:, r, length:] = pos.max() + 1 + within  # candidates continue after the prompt
        image_index.append(r * s + np.flatnonzero(row == spec.image_token_id))
    input_ids[:, length:] = flat

    # Candidate token j of candidate c is predicted at: the last prompt token (j = 0), else the previous token of c.
    first = within == 0
    src = np.where(first[None, :], lens[:, None] - 1, length + np.arange(t)[None, :] - 1)
    # Candidate tokens attend to their row's prompt and to the earlier tokens of their own candidate.
    prompt_keys = np.arange(length)[None, :] < lens[:, None]  # (B, L)
    own = (cand_of[:, None] == cand_of[None, :]) & (np.arange(t)[None, :] <= np.arange(t)[:, None])  # (T, T)
    cand_mask = np.concatenate(
        [np.broadcast_to(prompt_keys[:, None, :], (b, t, length)), np.broadcast_to(own[None], (b, t, t))], axis=2
    )

    # Vision tower: patches in window order (images stay contiguous), rotary (h, w) per patch, segment plans.
    m = spec.merge
    unit = m * m
    perm: list[np.ndarray] = []
    hw: list[np.ndarray] = []
    win_lens: list[int] = []
    img_lens: list[int] = []
    offset = 0
    for (gt, gh, gw) in grids:
        if gt != 1:
            raise ValueError(f"image grid {(gt, gh, gw)}: a still image has one temporal patch")
        order, lengths = window_order(gh, gw, m, spec.window)
        perm.append(order + offset)
        lw = gw // m
        ti, tj = order // lw, order % lw  # merged-token row / column, window order
        di, dj = np.divmod(np.arange(unit), m)
        hw.append(np.stack([(ti[:, None] * m + di[None]).ravel(), (tj[:, None] * m + dj[None]).ravel()], axis=1))
        win_lens += [n * unit for n in lengths]
        img_lens.append(gh * gw)
        offset += (gh // m) * lw
    perm_all = np.concatenate(perm)
    pixel_values = torch.from_numpy(np.concatenate([np.asarray(e["pixel_values"]) for e in encs]))
    return {
        "input_ids": torch.from_numpy(input_ids),
        "positions": torch.from_numpy(positions),
        "lens": torch.from_numpy(lens),
        "prompt_len": length,
        "image_index": torch.from_numpy(np.concatenate(image_index)),
        "pixel_values": pixel_values.to(getattr(torch, spec.pixel_dtype)),
        "grids": grids,
        "win_perm": torch.from_numpy(perm_all),
        "win_inv": torch.from_numpy(np.argsort(perm_all)),
        "patch_hw": torch.from_numpy(np.concatenate(hw)),
        "win_seg": segment_plan(win_lens),
        "img_seg": segment_plan(img_lens),
        "cand_src": torch.from_numpy(src),
        "cand_tgt": torch.from_numpy(flat),
        "cand_of": torch.from_numpy(cand_of),
        "n_cands": len(spec.cand_ids),
        "cand_mask": torch.from_numpy(np.ascontiguousarray(cand_mask))[:, None],
    }


# --------------------------------------------------------------------------------------------------------------
# GPU side: the forward
# --------------------------------------------------------------------------------------------------------------


def _liger():
    """Liger's functional kernels (liger-kernel; Triton, CUDA only), imported when a forward asks for them."""
    from liger_kernel.transformers import functional

    return functional


def _rms(x, w, eps: float, liger: bool = False):
    # = Qwen2_5_VLRMSNorm: normalise in float32, round to the input dtype, then scale by the weight (Liger's "llama"
    # casting mode rounds at the same places)
    if liger:
        return _liger().liger_rms_norm(x, w, eps, casting_mode="llama")
    return F.rms_norm(x, (x.shape[-1],), eps=eps) * w


def _glu(gate, up, act: str, liger: bool = False):
    """act(gate) * up, the gated MLP's middle; Liger's fused SiLU-mul for silu (SiLU in float32, rounded, times up)."""
    if liger and act == "silu":
        return _liger().liger_swiglu(gate, up)
    return _ACTS[act](gate) * up


def _rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _rope(q, k, cos, sin, liger: bool = False):
    """Rotary embedding of q (B, S, H, hd) and k (B, S, Hkv, hd) with cos/sin (B, S, 1, hd) (halves duplicated),
    computed in cos's dtype and rounded to q's (as the HF model: float32 in the vision tower, the model dtype in the
    decoder). Liger's kernel rotates in place, over the rows of (1, B*S, heads, hd) views (one kernel for every
    batch shape); q and k are copied first only where they are not contiguous (the vision tower's fused qkv)."""
    if liger:
        b, s, h, hd = q.shape
        qr, kr = _liger().liger_rope(q.reshape(1, b * s, h, hd).transpose(1, 2),
                                     k.reshape(1, b * s, k.shape[2], hd).transpose(1, 2),
                                     cos.reshape(1, b * s, hd), sin.reshape(1, b * s, hd))
        return qr.transpose(1, 2).view(q.shape), kr.transpose(1, 2).view(k.shape)
    dtype = q.dtype
    qf, kf = q.to(cos.dtype), k.to(cos.dtype)
    return (qf * cos + _rotate_half(qf) * sin).to(dtype), (kf * cos + _rotate_half(kf) * sin).to(dtype)


def _segment_attention(q, k, v, seg: dict[str, Any]):
    """Attention of packed (N, H, hd) q/k/v within consecutive segments (windows or images), one sdpa call."""
    n, heads, hd = q.shape
    ns, lmax = seg["n"], seg["lmax"]
    if seg["idx"] is None:  # equal segments: a view, no padding, no mask
        qs, ks, vs = (t.view(ns, lmax, heads, hd).transpose(1, 2) for t in (q, k, v))
        o = F.scaled_dot_product_attention(qs, ks, vs, scale=hd**-0.5)
        return o.transpose(1, 2).reshape(n, heads * hd)
    idx = seg["idx"]
    qs, ks, vs = (t[idx].transpose(1, 2) for t in (q, k, v))  # (segments, H, Lmax, hd)
    o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=seg["valid"], scale=hd**-0.5)
    return o.transpose(1, 2).reshape(ns * lmax, heads * hd)[seg["unpad"]]


def vision_block(x, n1, qkv_w, qkv_b, proj_w, proj_b, n2, gate_w, gate_b, up_w, up_b, down_w, down_b,
                 cos, sin, seg: dict[str, Any], heads: int, eps: float, act: str, liger: bool = False):
    """One Qwen2.5-VL vision block over the packed patches of a batch (window order); `seg` = windows or images.
    cos/sin (N, 1, hd) in float32 (the rotary is computed in float32, as the HF tower)."""

    n, d = x.shape
    hd = d // heads
    h = _rms(x, n1, eps, liger)
    q, k, v = F.linear(h, qkv_w, qkv_b).view(n, 3, heads, hd).unbind(1)
    q, k = _rope(q[None], k[None], cos[None], sin[None], liger)
    x = x + F.linear(_segment_attention(q[0], k[0], v, seg), proj_w, proj_b)
    h = _rms(x, n2, eps, liger)
    return x + F.linear(_glu(F.linear(h, gate_w, gate_b), F.linear(h, up_w, up_b), act, liger), down_w, down_b)


def text_layer(x, ln1, wq, bq, wk, bk, wv, bv, wo, ln2, wg, wu, wd, cos, sin, cand_mask,
               prompt_len: int, heads: int, kv_heads: int, eps: float, act: str, liger: bool = False):
    """One Qwen2.5-VL decoder layer over rows [prompt (right-padded to prompt_len) | candidate tokens].

    q/k/v stay in the projections' (B, S, heads, hd) layout; K/V are never repeated for grouped-query attention: the
    prompt call reads the kv_heads heads directly (`enable_gqa`, which sdpa's flash kernel runs), and the candidate
    call folds the G = heads // kv_heads query heads of each KV head into its query axis, (B, kv_heads, G*T, hd),
    against a mask repeated G times (the same attention row by row). Both parts are written into one (B, S, heads,
    hd) output, the out-projection's input."""

    b, s, d = x.shape
    hd = d // heads
    g = heads // kv_heads  # query heads per KV head: query head kv * g + j reads KV head kv
    n = prompt_len
    t = s - n
    h = _rms(x, ln1, eps, liger)
    q = F.linear(h, wq, bq).view(b, s, heads, hd)
    k = F.linear(h, wk, bk).view(b, s, kv_heads, hd)
    v = F.linear(h, wv, bv).view(b, s, kv_heads, hd)
    q, k = _rope(q, k, cos, sin, liger)
    kt, vt = k.transpose(1, 2), v.transpose(1, 2)  # (B, Hkv, S, hd) views
    o = q.new_empty(b, s, heads, hd)
    o[:, :n] = F.scaled_dot_product_attention(q[:, :n].transpose(1, 2), kt[:, :, :n], vt[:, :, :n], is_causal=True,
                                              scale=hd**-0.5, enable_gqa=True).transpose(1, 2)
    qc = q[:, n:].reshape(b, t, kv_heads, g, hd).permute(0, 2, 3, 1, 4).reshape(b, kv_heads, g * t, hd)
    oc = F.scaled_dot_product_attention(qc, kt, vt, attn_mask=cand_mask.repeat(1, 1, g, 1), scale=hd**-0.5)
    o[:, n:].view(b, t, kv_heads, g, hd).copy_(oc.view(b, kv_heads, g, t, hd).permute(0, 3, 1, 2, 4))
    x = x + F.linear(o.view(b, s, d), wo)
    h = _rms(x, ln2, eps, liger)
    return x + F.linear(_glu(F.linear(h, wg), F.linear(h, wu), act, liger), wd)


_COMPILED: dict[str, Any] = {}


def _fn(name: str, compile: bool):
    fn = {"vision": vision_block, "text": text_layer}[name]
    if not compile:
        return fn
    if name not in _COMPILED:

        _COMPILED[name] = torch.compile(fn, dynamic=True)
    return _COMPILED[name]


def to_device(batch: dict[str, Any], device) -> dict[str, Any]:
    """The batch's tensors on `device` (asynchronous from pinned memory)."""

    def move(v):
        if isinstance(v, torch.Tensor):
            return v.to(device, non_blocking=True)
        if isinstance(v, dict):
            return {k: move(x) for k, x in v.items()}
        return v

    return {k: move(v) for k, v in batch.items()}


def vision_tokens(visual, batch: dict[str, Any], *, compile: bool = False, liger_kernels: bool = False):
    """Merged image tokens of every image of the batch, (image tokens, out_hidden) in prompt order."""

    w = visual.patch_embed.proj.weight
    d = w.shape[0]
    unit = int(visual.config.spatial_merge_size) ** 2
    px = batch["pixel_values"].to(w.dtype)
    x = F.linear(px, w.reshape(d, -1))  # the Conv3d patch embedding: kernel == stride == one patch
    n = x.shape[0]
    x = x.view(n // unit, unit, d)[batch["win_perm"]].reshape(n, d)
    inv_freq = visual.rotary_pos_emb.inv_freq.float()
    freqs = batch["patch_hw"][..., None].float() * inv_freq  # (N, 2, hd/4)
    freqs = torch.cat([freqs[:, 0], freqs[:, 1]], dim=-1)
    emb = torch.cat([freqs, freqs], dim=-1)[:, None, :]  # (N, 1, hd)
    cos, sin = emb.cos(), emb.sin()
    full = {int(i) for i in visual.config.fullatt_block_indexes}
    act = getattr(visual.config, "hidden_act", "silu")
    fn = _fn("vision", compile)
    for i, blk in enumerate(visual.blocks):
        a, m = blk.attn, blk.mlp
        x = fn(x, blk.norm1.weight, a.qkv.weight, a.qkv.bias, a.proj.weight, a.proj.bias, blk.norm2.weight,
               m.gate_proj.weight, m.gate_proj.bias, m.up_proj.weight, m.up_proj.bias, m.down_proj.weight,
               m.down_proj.bias, cos, sin, batch["img_seg"] if i in full else batch["win_seg"],
               int(a.num_heads), float(blk.norm1.variance_epsilon), act, liger_kernels)
    return visual.merger(x)[batch["win_inv"]]


def text_rope(rotary_emb, positions, dtype):
    """cos, sin (B, S, 1, head_dim) of Qwen2.5-VL's multimodal RoPE for (3, B, S) positions, as its rotary module
    (the mrope sections merged: one ordinary rotary table per token)."""

    freqs = positions[..., None].float() * rotary_emb.inv_freq.float()  # (3, B, S, hd/2)
    section = list(rotary_emb.mrope_section)
    out = []
    for f in (freqs.cos(), freqs.sin()):
        f = f * rotary_emb.attention_scaling
        f = torch.cat([m[i % 3] for i, m in enumerate(f.split(section, dim=-1))], dim=-1)
        out.append(torch.cat((f, f), dim=-1).to(dtype)[:, :, None])
    return out[0], out[1]


def score_prepared(model, batch: dict[str, Any], *, compile: bool = False, liger_kernels: bool = False):
    """(B, C) float32 log-likelihood of every candidate for each row of a prepared batch (tensors on the model's
    device), from one forward over prompts and candidates. `liger_kernels`: Liger's RMSNorm, SiLU-mul and rotary
    kernels in the vision blocks and decoder layers (liger-kernel, CUDA only)."""

    inner = model.model
    lm = inner.language_model
    cfg = lm.config
    ids = batch["input_ids"]
    b, s = ids.shape
    x = lm.embed_tokens(ids)
    d = x.shape[-1]
    img = vision_tokens(inner.visual, batch, compile=compile, liger_kernels=liger_kernels)
    x = x.view(b * s, d).index_copy(0, batch["image_index"], img.to(x.dtype)).view(b, s, d)
    cos, sin = text_rope(lm.rotary_emb, batch["positions"], x.dtype)
    heads, kv_heads = int(cfg.num_attention_heads), int(cfg.num_key_value_heads)
    act = getattr(cfg, "hidden_act", "silu")
    fn = _fn("text", compile)
    for layer in lm.layers:
        at, m = layer.self_attn, layer.mlp
        x = fn(x, layer.input_layernorm.weight, at.q_proj.weight, at.q_proj.bias, at.k_proj.weight, at.k_proj.bias,
               at.v_proj.weight, at.v_proj.bias, at.o_proj.weight, layer.post_attention_layernorm.weight,
               m.gate_proj.weight, m.up_proj.weight, m.down_proj.weight, cos, sin, batch["cand_mask"],
               int(batch["prompt_len"]), heads, kv_heads, float(layer.input_layernorm.variance_epsilon), act,
               liger_kernels)
    src = batch["cand_src"]
    h = lm.norm(x.gather(1, src[..., None].expand(-1, -1, d)))  # (B, T, D): only where a candidate token is predicted
    logp = torch.log_softmax(model.lm_head(h).float(), dim=-1)
    tok = logp.gather(2, batch["cand_tgt"][None, :, None].expand(b, -1, 1)).squeeze(-1)  # (B, T)
    return tok.new_zeros((b, int(batch["n_cands"]))).index_add_(1, batch["cand_of"], tok)


# --------------------------------------------------------------------------------------------------------------
# Analytic FLOPs (benchmarks): multiply-adds x 2 from the shapes, elementwise work left out
# --------------------------------------------------------------------------------------------------------------


def vision_flops(vcfg: dict[str, Any], grid_h: int, grid_w: int) -> float:
    """FLOPs of one image through the Qwen2.5-VL vision tower (patch embedding, blocks, merger)."""
    s = grid_h * grid_w
    d, i, depth = vcfg["hidden_size"], vcfg["intermediate_size"], vcfg["depth"]
    m = vcfg["spatial_merge_size"]
    window = vcfg["window_size"] // m // vcfg["patch_size"]
    patch_in = vcfg.get("in_channels", 3) * vcfg["temporal_patch_size"] * vcfg["patch_size"] ** 2
    _, lengths = window_order(grid_h, grid_w, m, window)
    n_full = len(vcfg["fullatt_block_indexes"])
    linear = 2 * s * (3 * d * d + d * d + 3 * d * i)
    attn_win = 4 * d * sum((n * m * m) ** 2 for n in lengths)  # QK^T and PV inside each window
    attn_full = 4 * d * s * s
    hm = d * m * m
    merger = 2 * (s // (m * m)) * (hm * hm + hm * vcfg["out_hidden_size"])
    return 2 * s * patch_in * d + depth * linear + (depth - n_full) * attn_win + n_full * attn_full + merger


def text_flops(tcfg: dict[str, Any], prompt_len: int, cand_lens: list[int] | None = None, logits: int = 0) -> float:
    """FLOPs of one prompt of `prompt_len` tokens (causal attention: the pairs actually needed) through the decoder,
    plus each candidate's tokens (attending to the prompt and their own earlier tokens) and `logits` positions of
    the LM head."""
    d, i, layers = tcfg["hidden_size"], tcfg["intermediate_size"], tcfg["num_hidden_layers"]
    kv = d // tcfg["num_attention_heads"] * tcfg["num_key_value_heads"]
    per_token = 2 * (d * d + 2 * d * kv + d * d + 3 * d * i)  # q, k, v, o, gate/up/down
    cand_lens = cand_lens or []
    tokens = prompt_len + sum(cand_lens)
    pairs = prompt_len * (prompt_len + 1) // 2 + sum(n * prompt_len + n * (n + 1) // 2 for n in cand_lens)
    return layers * (tokens * per_token + 4 * d * pairs) + 2 * d * tcfg["vocab_size"] * logits
