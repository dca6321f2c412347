"""A decode step's sampling in ONE GPU kernel (`fused_sample`): temperature, suppressed tokens, the greedy row, exact
top-p, finished rows and the chosen token's log-probability, read straight from the LM head's bf16 logits.

The draw is the one `sampling.sample_next` makes, written as a Triton kernel with one program per row:
- pass 1 over the vocabulary: the row's softmax normaliser (online max and sum), the greedy argmax and the race winner
  argmax(logit / T + Gumbel noise), i.e. argmax p / Exp(1) noise (Gumbel = -log(Exp(1)); the softmax's normaliser is
  the same for every token of a row, so the race needs no probabilities);
- then, when top_p < 1, passes that check the winner: the mass of the tokens strictly more probable than it; at least
  `top_p` means the winner lies outside the nucleus, and the race is rerun (same noise: the counter-based generator
  gives the same value for the same (row seed, token)) among the tokens more probable than it, until the winner lies
  inside. The result is the argmax of the same noisy scores over the explicit nucleus, so the draw is exactly ∝ p on
  the nucleus, as in `sample_next` (whose docstring has the argument); most rows need one checking pass.

Against the same step in torch ops (fp32 copy of the logits, softmax, exponential noise, the race, the nucleus check
with a host synchronisation per round, argmax for the greedy row, masking finished rows) this reads the bf16 logits
twice and writes one token per row, with no host synchronisation, so a decode loop can queue its steps ahead of the GPU.

The noise is Triton's Philox generator keyed by a per-step seed (drawn from the run's torch generator) plus the row:
seeded runs repeat exactly on the same GPU, but the stream differs from torch's `exponential_` on the CPU path.
`uniforms` replaces the generator with given U(0, 1) values: that is how the tests compare the kernel, token for token,
with a plain-torch draw over an explicitly built nucleus (`tests/sampling_cases.py`), on CPU through Triton's
interpreter (tests/unit/common/test_common_sampling_kernel.py) and compiled on GPUs (tests/gpu/).

Also here, `suffix_attention_merged`: the packed decode's attention over each row's own new tokens, joined with the
prompt part (computed once per prompt by FlashAttention, `sampling.varlen_cascade_attention`) through the logsumexps
and unfolded to the model's head layout, in one kernel.

Triton is imported lazily: CUDA builds of torch bring it; CPU installs need not have it (`available` says).
"""

from __future__ import annotations

from typing import Any

tl: Any = None  # triton.language, bound by `_kernel` on first use (the kernels' source refers to it by this name)
BLOCK = 2048  # lanes of a program: the vocabulary entries it reads per loop iteration (four per noise draw)
NUM_WARPS = 16  # at 1,088 x 152,064 bf16 logits on an H200: 1.00 ms per step (benchmarks/sampling_kernel.py)


def _scaled_block(base, c, inside, inv_temp, suppress_ptr, HAS_SUPPRESS: tl.constexpr):
    """Tokens c of a row: (logits, logits / T, logits / T with the suppressed ones at -inf), float32, -inf past the
    vocabulary."""
    x = tl.load(base + c, mask=inside, other=-float("inf")).to(tl.float32)
    s_all = x * inv_temp
    s = s_all
    if HAS_SUPPRESS:
        banned = tl.load(suppress_ptr + c, mask=inside, other=1) != 0
        x = tl.where(banned, -float("inf"), x)
        s = tl.where(banned, -float("inf"), s_all)
    return x, s_all, s


def _first_argmax(vals, idx):
    """The smallest index among the lanes holding the largest value (torch's argmax tie rule)."""
    return tl.min(tl.where(vals == tl.max(vals, axis=0), idx, 2147483647), axis=0)


def _race(base, vocab, thr, inv_temp, seed, unif_row, suppress_ptr, lanes, HAS_SUPPRESS: tl.constexpr,
          GIVEN_UNIFORMS: tl.constexpr, STATS: tl.constexpr, LOGPROBS: tl.constexpr, BLOCK: tl.constexpr):
    """The race over the tokens whose scaled logit exceeds `thr` (-inf: all): the first argmax of logit / T + Gumbel
    noise. Every lane keeps its own running maximum and argmax (token start + lane), reduced across lanes once, after
    the loop; the noise comes four blocks at a time from one Philox call (`randint4x`, counter = group * BLOCK +
    lane, key = the row's seed), the same in every rerun. With STATS (the first race) also, per lane, the softmax
    normalisers (max, sum; a finite start, so that exp(start - start) never makes 0 * inf) of logit / T over the
    whole vocabulary (LOGPROBS) and over the tokens that may be drawn, and the greedy argmax."""
    m_all = tl.full((BLOCK,), -1.0e30, tl.float32)
    z_all = tl.zeros((BLOCK,), tl.float32)
    m_s = tl.full((BLOCK,), -1.0e30, tl.float32)
    z_s = tl.zeros((BLOCK,), tl.float32)
    top = tl.full((BLOCK,), -float("inf"), tl.float32)
    top_i = tl.zeros((BLOCK,), tl.int32)
    best = tl.full((BLOCK,), -float("inf"), tl.float32)
    best_i = tl.zeros((BLOCK,), tl.int32)
    for start in range(0, vocab, 4 * BLOCK):
        if not GIVEN_UNIFORMS:
            r0, r1, r2, r3 = tl.randint4x(seed, start // 4 + lanes)
        for j in tl.static_range(4):
            c = start + j * BLOCK + lanes
            inside = c < vocab
            x, s_all, s = _scaled_block(base, c, inside, inv_temp, suppress_ptr, HAS_SUPPRESS)
            if STATS:  # online softmax sums, one exp per token: exp(-|s - m|) rescales the sum or adds the token
                if LOGPROBS:
                    d = s_all - m_all
                    e = tl.exp(-tl.abs(d))
                    z_all = tl.where(d > 0, z_all * e + 1.0, z_all + e)
                    m_all = tl.maximum(m_all, s_all)
                d = s - m_s
                e = tl.exp(-tl.abs(d))
                z_s = tl.where(d > 0, z_s * e + 1.0, z_s + e)
                m_s = tl.maximum(m_s, s)
                up = x > top
                top = tl.where(up, x, top)
                top_i = tl.where(up, c, top_i)
            if GIVEN_UNIFORMS:
                u = tl.load(unif_row + c, mask=inside, other=0.5)
            elif j == 0:
                u = tl.uint_to_uniform_float(r0)
            elif j == 1:
                u = tl.uint_to_uniform_float(r1)
            elif j == 2:
                u = tl.uint_to_uniform_float(r2)
            else:
                u = tl.uint_to_uniform_float(r3)
            score = tl.where(s > thr, s - tl.log(-tl.log(u)), -float("inf"))  # (u = 0: never drawn)
            up = score > best
            best = tl.where(up, score, best)
            best_i = tl.where(up, c, best_i)
    return _first_argmax(best, best_i), m_all, z_all, m_s, z_s, top, top_i


def _sample_rows(logits_ptr, logits_stride, vocab, tok_ptr, logp_ptr, seed_ptr, unif_ptr, unif_stride, suppress_ptr,
                 done_ptr, inv_temp, top_p, pad_id, greedy_every,
                 HAS_SUPPRESS: tl.constexpr, HAS_DONE: tl.constexpr, NUCLEUS: tl.constexpr,
                 LOGPROBS: tl.constexpr, GIVEN_UNIFORMS: tl.constexpr, BLOCK: tl.constexpr):
    """One program per row (see the module docstring): the first race with the row's statistics, then the nucleus
    check and the reruns (`_race`); decorated with `triton.jit` by `_kernel`."""
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * logits_stride
    lanes = tl.arange(0, BLOCK)
    active = True
    if HAS_DONE:
        active = tl.load(done_ptr + row) == 0
    if active:
        greedy = (greedy_every > 0) & (row % tl.maximum(greedy_every, 1) == 0)
        if GIVEN_UNIFORMS:
            seed = 0
        else:
            seed = tl.load(seed_ptr) + row
        unif_row = unif_ptr + row * unif_stride
        win, m_all, z_all, m_s, z_s, top, top_i = _race(
            base, vocab, -float("inf"), inv_temp, seed, unif_row, suppress_ptr, lanes, HAS_SUPPRESS, GIVEN_UNIFORMS,
            True, LOGPROBS, BLOCK)
        tok = win
        if greedy:
            tok = _first_argmax(top, top_i)
        elif NUCLEUS:
            mx = tl.max(m_s, axis=0)
            z = tl.sum(z_s * tl.exp(m_s - mx), axis=0)
            # the winner lies outside the nucleus <=> the tokens above its scaled logit hold >= top_p of the mass
            thr = tl.load(base + win).to(tl.float32) * inv_temp
            outside = True
            while outside:
                acc = tl.zeros((BLOCK,), tl.float32)
                for start in range(0, vocab, BLOCK):
                    c = start + lanes
                    _, _, s = _scaled_block(base, c, c < vocab, inv_temp, suppress_ptr, HAS_SUPPRESS)
                    acc += tl.where(s > thr, tl.exp(s - mx), 0.0)
                outside = tl.sum(acc, axis=0) >= top_p * z
                if outside:  # rerun the race (same noise) among the tokens more probable than the rejected winner
                    win, _, _, _, _, _, _ = _race(
                        base, vocab, thr, inv_temp, seed, unif_row, suppress_ptr, lanes, HAS_SUPPRESS,
                        GIVEN_UNIFORMS, False, False, BLOCK)
                    thr = tl.load(base + win).to(tl.float32) * inv_temp
            tok = win
        tl.store(tok_ptr + row, tok.to(tl.int64))
        if LOGPROBS:
            mx_all = tl.max(m_all, axis=0)
            z_tot = tl.sum(z_all * tl.exp(m_all - mx_all), axis=0)
            x_tok = tl.load(base + tok).to(tl.float32) * inv_temp
            tl.store(logp_ptr + row, x_tok - mx_all - tl.log(z_tot))
    else:
        tl.store(tok_ptr + row, tl.full((), 0, tl.int64) + pad_id)
        if LOGPROBS:
            tl.store(logp_ptr + row, 0.0)


def _suffix_attention(q, k, v, used, out_p, lse_p, out, k_stride_r, lse_stride_q, lse_stride_h, hkv, d, groups,
                      scale_log2, G: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr, DOT_F32: tl.constexpr):
    """One program per (row r, KV head h): the `groups` query heads of h (folded positions r * groups + j of q,
    (R * groups, Hkv, d)) attend to the row's own new tokens k[r, :used[r], h] (k, v: (R, S, Hkv, d)) with an online
    softmax in base 2; the result is joined with the prompt part's output and logsumexp at the same folded positions
    (out_p, lse_p) and written unfolded, to query head h * groups + j of out (R, Hkv * groups, d). G, D: groups and d
    rounded up to powers of two of at least 16 (the tile; the rest masked). DOT_F32: the products' bf16/fp16 operands
    widened to fp32 first (Triton's interpreter multiplies 16-bit tiles wrongly; the values are the same)."""
    r = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1).to(tl.int64)
    j = tl.arange(0, G)
    e = tl.arange(0, D)
    jm = j < groups
    em = e < d
    qm = jm[:, None] & em[None, :]
    t = r * groups + j  # the folded query positions of this row and KV head
    src = (t * hkv + h)[:, None] * d + e[None, :]
    qv = tl.load(q + src, mask=qm, other=0.0)
    if DOT_F32:
        qv = qv.to(tl.float32)
    n = tl.load(used + r)
    m_i = tl.full([G], -float("inf"), tl.float32)
    l_i = tl.zeros([G], tl.float32)
    acc = tl.zeros([G, D], tl.float32)
    kv_base = r * k_stride_r + h * d
    for s0 in range(0, n, BLOCK_N):
        s = s0 + tl.arange(0, BLOCK_N)
        sm = s < n
        at = kv_base + (s * hkv * d)[:, None] + e[None, :]
        km = sm[:, None] & em[None, :]
        kt = tl.load(k + at, mask=km, other=0.0)
        vt = tl.load(v + at, mask=km, other=0.0)
        if DOT_F32:
            kt = kt.to(tl.float32)
        sc = tl.dot(qv, tl.trans(kt)) * scale_log2
        sc = tl.where(sm[None, :], sc, -float("inf"))
        m_new = tl.maximum(m_i, tl.max(sc, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(sc - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        pv = p.to(v.dtype.element_ty)  # the weights in the values' dtype, as FlashAttention's second product
        if DOT_F32:
            pv, vt = pv.to(tl.float32), vt.to(tl.float32)
        acc = acc * alpha[:, None] + tl.dot(pv, vt)
        m_i = m_new
    has = l_i > 0.0
    lse_s = tl.where(has, (m_i + tl.log2(tl.where(has, l_i, 1.0))) * 0.6931471805599453, -float("inf"))
    o_s = acc / tl.where(has, l_i, 1.0)[:, None]
    lp = tl.load(lse_p + t * lse_stride_q + h * lse_stride_h, mask=jm, other=0.0)
    w = tl.sigmoid(lp - lse_s)  # the prompt part's share of the softmax mass
    o_p = tl.load(out_p + src, mask=qm, other=0.0).to(tl.float32)
    dst = (r * hkv * groups + h * groups + j)[:, None] * d + e[None, :]
    tl.store(out + dst, (o_s + (o_p - o_s) * w[:, None]).to(out.dtype.element_ty), mask=qm)


_KERNELS: dict = {}  # (kernel, interpreter mode) -> the jitted kernel
_HELPERS = {"_scaled_block": _scaled_block, "_first_argmax": _first_argmax, "_race": _race}  # called by the kernels


def _kernel(fn=None):
    """`fn` (default `_sample_rows`) under `triton.jit`, built on first use, so that importing this module needs no
    Triton, and a process that sets TRITON_INTERPRET=1 gets the interpreter's version. The helpers the kernels call
    are jitted the same way and bound to their names, where the kernels' source finds them."""
    import triton
    import triton.language as tl

    fn = fn or _sample_rows
    mode = bool(triton.knobs.runtime.interpret)
    if (fn.__name__, mode) not in _KERNELS:
        globals()["tl"] = tl  # the module global the kernels' source refers to
        for name, helper in _HELPERS.items():
            if (name, mode) not in _KERNELS:
                _KERNELS[name, mode] = triton.jit(helper)
            globals()[name] = _KERNELS[name, mode]
        _KERNELS[fn.__name__, mode] = triton.jit(fn)
    return _KERNELS[fn.__name__, mode]


def _pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


# New tokens a program reads per loop iteration, and its warps: the fastest of six tile shapes at the diagnosis's
# shape on an H200 (2,040 rows, 7 query heads per KV head, 32-255 new tokens; benchmarks/RESULTS.md, Sampling).
SUFFIX_BLOCK_N = 32
SUFFIX_NUM_WARPS = 2


def suffix_attention_merged(q, keys, values, used, out_p, lse_p, scale: float, groups: int, *,
                            block_n: int | None = None, num_warps: int | None = None):
    """The packed decode's second attention part and the join, in one kernel: each row's folded queries
    q (R * groups, Hkv, D) over the row's own new tokens keys/values (R, S, Hkv, D), the first `used[r]` of them
    (used: (R,) int32 on the device, so a CUDA graph replays it at any step), joined with the prompt part
    (out_p (R * groups, Hkv, D), lse_p (R * groups, Hkv) fp32, any strides: FlashAttention's variable-length
    kernel returns it transposed) through the logsumexps and unfolded. Returns (R, Hkv * groups, D): what
    FlashAttention's variable-length kernel over the same keys, then `sampling.merge_attention_parts` and the unfold
    compute. The kernel reads each row's keys once for its query heads (a 16-row tile), where FlashAttention's kernel
    computes a 128-query tile for the `groups` queries of each row (2-2.6x faster at the diagnosis's shape)."""
    import torch
    import triton

    r, s, hkv, d = keys.shape
    if q.shape != (r * groups, hkv, d) or not (q.is_contiguous() and keys.is_contiguous() and values.is_contiguous()
                                               and out_p.is_contiguous()):
        raise ValueError("suffix_attention_merged: q (R * groups, Hkv, D), keys/values (R, S, Hkv, D) and out_p "
                         "contiguous")
    out = torch.empty((r, hkv * groups, d), dtype=q.dtype, device=q.device)
    _kernel(_suffix_attention)[(r, hkv)](
        q, keys, values, used, out_p, lse_p, out, s * hkv * d, lse_p.stride(0), lse_p.stride(1), hkv, d, groups,
        float(scale) * 1.4426950408889634, G=max(16, _pow2(groups)), D=max(16, _pow2(d)),
        BLOCK_N=block_n or SUFFIX_BLOCK_N, DOT_F32=bool(triton.knobs.runtime.interpret) and keys.element_size() < 4,
        num_warps=num_warps or SUFFIX_NUM_WARPS)
    return out


_AVAILABLE: dict = {}


def available(device) -> bool:
    """Whether the fused kernel runs on `device`: a CUDA device with Triton importable (probed once per device)."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return False
    if device not in _AVAILABLE:
        try:
            x = torch.zeros(2, 8, device=device)
            seed = torch.zeros(1, dtype=torch.long, device=device)
            fused_sample(x, temperature=1.0, top_p=0.5, seed=seed)
            torch.cuda.synchronize(device)
            _AVAILABLE[device] = True
        except (ImportError, RuntimeError, AttributeError) as e:
            import logging

            logging.getLogger(__name__).warning("fused sampling kernel unavailable on %s (%s); sampling with torch ops",
                                                device, e)
            _AVAILABLE[device] = False
    return _AVAILABLE[device]


def _bytes(mask):
    """A bool/uint8 mask as uint8, without a copy for bool (one byte per element either way)."""
    import torch

    return mask.view(torch.uint8) if mask.dtype == torch.bool else mask.to(torch.uint8)


def fused_sample(logits, *, temperature: float, top_p: float, seed=None, suppress_mask=None, done=None,
                 pad_id: int = 0, greedy_every: int = 0, logprobs: bool = False, uniforms=None):
    """Next tokens of (R, V) logits (any float dtype, last dimension contiguous), one kernel launch.

    temperature, top_p: as `sample_next`. seed: a one-element int64 tensor on the logits' device (row r draws from
    Philox keyed by seed + r); or `uniforms` (R, V) float32 in (0, 1) in its place. suppress_mask: (V,) bool/uint8,
    tokens never drawn (nor picked by the greedy rows). done: (R,) bool, finished rows get `pad_id` (and
    log-probability 0). greedy_every = k > 0: rows 0, k, 2k, ... take the argmax (one greedy row per group of k).
    Returns tok (R,) int64, and with `logprobs` also (R,) float32: log_softmax(logits / T) at the token, over the
    whole vocabulary before suppression and top-p (what a trainer's forward computes for the same token)."""
    import torch

    if temperature <= 0:
        raise ValueError(f"temperature={temperature}: must be > 0")
    r, v = logits.shape
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    dev = logits.device
    if (seed is None) == (uniforms is None):
        raise ValueError("give exactly one of seed (a device tensor) and uniforms")
    tok = torch.empty(r, dtype=torch.long, device=dev)
    logp = torch.empty(r, dtype=torch.float32, device=dev) if logprobs else tok
    unif = uniforms.float().contiguous() if uniforms is not None else logits
    _kernel()[(r,)](
        logits, logits.stride(0), v, tok, logp, seed if seed is not None else tok, unif, unif.stride(0) if uniforms is not None else 0,
        _bytes(suppress_mask) if suppress_mask is not None else tok,
        _bytes(done) if done is not None else tok, 1.0 / float(temperature), float(top_p), int(pad_id),
        int(greedy_every),
        HAS_SUPPRESS=suppress_mask is not None, HAS_DONE=done is not None, NUCLEUS=top_p < 1.0, LOGPROBS=logprobs,
        GIVEN_UNIFORMS=uniforms is not None, BLOCK=BLOCK, num_warps=NUM_WARPS,
    )
    return (tok, logp) if logprobs else tok

