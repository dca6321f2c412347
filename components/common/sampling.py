"""Sampling backends behind one interface: K sampled completions and one greedy completion per prompt.

    backend = make_backend(SamplingConfig(backend="transformers"), "path/or/hub-id")
    samples = backend.sample(prompts, n=16)                  # list (per prompt) of 16 strings
    greedy  = backend.greedy(prompts)                        # list of strings
    samples, greedy = backend.sample_and_greedy(prompts, 16) # both from ONE prefill per prompt

A prompt is a `Prompt(messages, image)`: chat messages in the Qwen2.5-VL form plus an optional PIL image.
Every completion a backend returns is a `Completion`: a `str` that also says whether it was cut at
`max_new_tokens` before its end-of-turn token (`.truncated`), so that truncation is counted, not silently wrong.
Image pixel bounds (`min_pixels`, `max_pixels`; 0 = the checkpoint's own processor setting) resize every image the
same way in every backend (the paper's code: 1280·28·28 and 16384·28·28).

Backends
- `transformers` (embedded default, CPU and GPU fallback): `shared_prefix_generate` encodes each prompt and image
  ONCE (one prefill of the batch, vision tower included) and decodes all B×(K+1) rows together: no K-fold prefill,
  and no K-fold copy of the prompt's keys/values either: the decode attention reads each prompt's cache once for all
  its rows and each row's own new tokens from a preallocated suffix, two softmax parts joined exactly, grouped-query
  attention without repeating the KV heads (on GPUs that run it, torch's FlashAttention variable-length kernel over
  each prompt's packed keys, `varlen_cascade_attention`; elsewhere batched matmuls, `cascade_attention`). A host
  thread prepares the next batch's inputs and makes the previous batch's texts while a batch samples. Positions follow Qwen2.5-VL's multimodal RoPE
  (`rope_deltas` from the prefill). On a GPU the decode forward is replayed as CUDA graphs (static shapes; one graph
  per batch over the packed layout, 64-position buckets over the padded one); top-p is exact without a vocabulary sort (`sample_next`), and on a GPU each
  step's sampling is one kernel with no host synchronisation (`sampling_kernel.fused_sample`).
- `vllm` (production): `SamplingParams(n=K)` with prefix caching and tensor parallelism; requests are built by the
  pure function `build_vllm_requests` (testable without vLLM installed); vLLM is imported only when used.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Protocol

BACKENDS = ("transformers", "vllm")
# Tokens a completion must never contain: vision placeholders and the turn opener (a weak model samples them).
SUPPRESSED_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_start|>")


def suppressed_token_ids(tokenizer) -> list[int]:
    """Ids of SUPPRESSED_TOKENS in `tokenizer` (those it does not know are left out)."""
    ids = [tokenizer.convert_tokens_to_ids(t) for t in SUPPRESSED_TOKENS]
    return [i for i in ids if isinstance(i, int) and i != tokenizer.unk_token_id]


class Completion(str):
    """A completion's text, whether generation stopped at `max_new_tokens` before its end-of-turn token, and how many
    tokens it took (its end token included; None where the backend does not say)."""

    truncated: bool
    tokens: int | None

    def __new__(cls, text: str, truncated: bool = False, tokens: int | None = None):
        obj = super().__new__(cls, text)
        obj.truncated = bool(truncated)
        obj.tokens = tokens
        return obj


def is_truncated(completion: str) -> bool:
    """True for a `Completion` cut at the token limit (a plain string counts as complete)."""
    return bool(getattr(completion, "truncated", False))


@dataclass
class Prompt:
    messages: list[dict]
    image: Any | None = None  # PIL.Image


@dataclass
class SamplingConfig:
    backend: str = field(default="transformers", metadata={"help": "transformers (default, CPU/GPU) or vllm (production)"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature for Pass@K samples"})
    top_p: float = field(default=0.9, metadata={"help": "nucleus sampling top-p"})
    max_new_tokens: int = field(default=256, metadata={"help": "longest completion"})
    batch_size: int = field(default=8, metadata={"help": "prompts per prefill batch (each decodes K+1 rows)"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N"})
    tensor_parallel_size: int = field(default=1, metadata={"help": "vllm: GPUs per model replica"})
    gpu_memory_utilization: float = field(default=0.9, metadata={"help": "vllm: fraction of GPU memory it may take"})
    max_model_len: int = field(default=8192, metadata={"help": "vllm: longest prompt + completion, in tokens"})
    min_pixels: int = field(default=0, metadata={"help": "smallest image area in pixels after resizing (0 = the processor's own)"})
    max_pixels: int = field(default=0, metadata={"help": "largest image area in pixels after resizing (0 = the processor's own)"})
    liger_kernels: bool = field(default=False, metadata={"help": "transformers backend on a GPU: Liger's fused RMSNorm / "
                                                         "SwiGLU / rotary kernels (needs the liger-kernel package)"})

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r} is not known; choose one of {', '.join(BACKENDS)}")
        if self.liger_kernels and self.backend != "transformers":
            raise ValueError(f"liger_kernels=True applies to the transformers backend; backend={self.backend!r} runs its "
                             "own fused kernels: set liger_kernels: false")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be > 0 for sampling; Acc@1 uses greedy decoding")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} must be >= 1")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1")
        if self.tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size={self.tensor_parallel_size} must be >= 1")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization={self.gpu_memory_utilization} must be in (0, 1]")
        if self.min_pixels < 0 or self.max_pixels < 0:
            raise ValueError(f"min_pixels={self.min_pixels}, max_pixels={self.max_pixels} must be >= 0 (0 = processor default)")
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels={self.min_pixels} exceeds max_pixels={self.max_pixels}")

    def pixel_bounds(self) -> dict[str, int]:
        """The image processor's size override ({"shortest_edge": min, "longest_edge": max}); empty = its own."""
        out = {}
        if self.min_pixels:
            out["shortest_edge"] = self.min_pixels
        if self.max_pixels:
            out["longest_edge"] = self.max_pixels
        return out


class SamplingBackend(Protocol):
    def sample(self, prompts: list[Prompt], n: int) -> list[list[str]]: ...

    def greedy(self, prompts: list[Prompt]) -> list[str]: ...

    def sample_and_greedy(self, prompts: list[Prompt], n: int) -> tuple[list[list[str]], list[str]]: ...


# --------------------------------------------------------------------------------------------------------------
# Shared-prefix decoding on top of a Hugging Face Qwen2.5-VL model
# --------------------------------------------------------------------------------------------------------------


class _PrefixCache:
    """The KV cache of R = B×rows sequences that share their prompt's prefill: each prompt's keys/values held ONCE
    (the prefill's own tensors) and each row's new tokens in a preallocated suffix buffer.

    `update` writes the new token's keys/values into the suffix; the decode attention (routed in by
    `_decode_attention`) reads the prompt part once per prompt and the suffix part per row. Implements what the text
    model calls. Dynamic mode: the suffix is read up to the tokens written so far. Static mode (CUDA graphs,
    `write_pos` set): the write position is a device tensor and every call reads `view_len` suffix positions, the
    ones not yet written masked out.

    Two layouts, one per attention kernel:
    - padded (`varlen=None`; CPU, fp32, GPUs without FlashAttention): the prefill's (B, Hkv, L, D) tensors with a
      0/-inf bias over the left padding, suffix (R, Hkv, S, D); read by `cascade_attention` (batched matmuls).
    - packed (`varlen` = a variable-length attention kernel, `_varlen_kernel`): each prompt's unpadded keys packed
      into (total, Hkv, D) with cumulative offsets, suffix (R, S, Hkv, D); read by `varlen_cascade_attention`
      (FlashAttention's variable-length kernel for the prompts; with `fused_suffix`, one Triton kernel for the new
      tokens and the join, else a second FlashAttention call and torch ops)."""

    is_compileable = False

    def __init__(self, prefill_cache, prompt_mask, rows: int, max_new_tokens: int, varlen=None,
                 fused_suffix: bool = False):
        import torch

        self.varlen = varlen
        self.fused_suffix = fused_suffix and varlen is not None  # packed layout: new tokens + join in one kernel
        self.prompt_keys: list = []
        self.prompt_values: list = []
        self.keys: list = []  # per layer: the rows' new tokens, (R, Hkv, S, D) padded / (R, S, Hkv, D) packed
        self.values: list = []
        mask = prompt_mask.bool()
        kept = mask.flatten().nonzero().squeeze(1) if varlen is not None else None  # one host sync, not one per layer
        for k, v in _cache_tensors(prefill_cache):
            b, h, length, d = k.shape
            if varlen is None:
                self.prompt_keys.append(k)
                self.prompt_values.append(v)
                suffix = (b * rows, h, max_new_tokens)
            else:  # (B, Hkv, L, D) -> the unpadded positions of every prompt, packed: (total, Hkv, D)
                self.prompt_keys.append(k.transpose(1, 2).reshape(b * length, h, d).index_select(0, kept))
                self.prompt_values.append(v.transpose(1, 2).reshape(b * length, h, v.shape[-1]).index_select(0, kept))
                suffix = (b * rows, max_new_tokens, h)
            # zeros: masked-out positions get weight 0 and must hold no NaN garbage
            self.keys.append(k.new_zeros((*suffix, d)))
            self.values.append(v.new_zeros((*suffix, v.shape[-1])))
        self.length = length
        self.rows = rows
        self.prompt_bias = torch.zeros(prompt_mask.shape, dtype=torch.float32, device=prompt_mask.device)
        self.prompt_bias.masked_fill_(~mask, float("-inf"))  # (B, L): left padding never attended
        if varlen is not None:
            lens = mask.sum(-1)
            self.prompt_offsets = torch.nn.functional.pad(lens.cumsum(0), (1, 0)).int()  # (B+1,)
            self.prompt_max = int(lens.max())
            self.suffix_used = torch.zeros(b * rows, dtype=torch.int32, device=prompt_mask.device)
            self.offsets: dict = {}  # query heads per KV head -> the kernel's fixed offset tensors
        self.written = 0  # dynamic mode: new tokens in the suffix
        self.attend = 0  # dynamic mode: suffix positions this step's attention reads
        self.write_pos = None  # static mode: a device tensor holding the write position among the new tokens
        self.view_len = 0  # static mode: suffix positions every call reads (later ones masked out)
        self.suffix_bias = None  # static mode, padded layout: (view_len,) 0 / -inf

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        import torch

        pos_dim = 2 if self.varlen is None else 1
        if self.write_pos is not None:  # static shapes: no host-side position, fixed-length views
            new_k, new_v = key_states, value_states
            if self.varlen is not None:  # (R, Hkv, 1, D) -> (R, 1, Hkv, D)
                new_k, new_v = key_states.transpose(1, 2), value_states.transpose(1, 2)
            self.keys[layer_idx].index_copy_(pos_dim, self.write_pos, new_k)
            self.values[layer_idx].index_copy_(pos_dim, self.write_pos, new_v)
            if layer_idx == 0 and self.varlen is not None:
                self.suffix_used.copy_((self.write_pos + 1).expand_as(self.suffix_used))
            elif layer_idx == 0:
                pos = torch.arange(self.view_len, device=key_states.device)
                self.suffix_bias = torch.zeros(self.view_len, dtype=torch.float32, device=key_states.device)
                self.suffix_bias.masked_fill_(pos > self.write_pos, float("-inf"))
            return key_states, value_states
        n = key_states.shape[-2]
        if n != 1:
            raise ValueError(f"the shared-prefix cache decodes one token per row and step, got {n}")
        self.keys[layer_idx].select(pos_dim, self.written).copy_(key_states[:, :, 0])
        self.values[layer_idx].select(pos_dim, self.written).copy_(value_states[:, :, 0])
        self.attend = self.written + 1
        if layer_idx == 0 and self.varlen is not None:
            self.suffix_used.fill_(self.attend)
        if layer_idx == len(self.keys) - 1:
            self.written += 1
        return key_states, value_states

    def suffix(self, layer_idx: int):
        """(keys, values, bias or None) of the rows' new tokens that this step's attention reads (padded layout)."""
        n = self.view_len if self.write_pos is not None else self.attend
        return self.keys[layer_idx][:, :, :n], self.values[layer_idx][:, :, :n], self.suffix_bias

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length + self.written

    def nbytes(self) -> int:
        tensors = self.prompt_keys + self.prompt_values + self.keys + self.values
        return sum(t.numel() * t.element_size() for t in tensors)


def _cache_tensors(cache) -> list[tuple[Any, Any]]:
    """(keys, values) per layer of a transformers Cache (5.x `layers`), or of a legacy tuple cache."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(k, v) for k, v in cache]


GRAPH_BUCKET = 64  # new positions per CUDA graph of the static-shape decode


class _GraphDecode:
    """The decode forward (token in, logits out) with static shapes, captured as CUDA graphs and replayed.

    The padded layout reads the rows' new tokens in buckets of `bucket` positions (one graph per bucket, captured on
    first use) with a bias that hides the not-yet-written ones, so a replay needs no host-side shape or position: the
    step index lives in a device tensor. The packed layout reads each row's new tokens up to the written count, which
    also lives on the device, so one graph (one capture per batch) serves every step. On a device without CUDA the
    same static-shape step runs eagerly (that is what the CPU tests check)."""

    def __init__(self, model, text_model, cache, next_pos, max_new_tokens: int, bucket: int | None = None):
        import torch

        r = next_pos.shape[0]
        dev = next_pos.device
        self.model, self.text_model, self.cache = model, text_model, cache
        self.max_new = max_new_tokens
        self.bucket = bucket or (max_new_tokens if cache.varlen is not None else GRAPH_BUCKET)
        self.tok = torch.zeros(r, dtype=torch.long, device=dev)
        self.step = torch.zeros(1, dtype=torch.long, device=dev)
        self.next_pos = next_pos.clone()
        self.use_graphs = dev.type == "cuda"
        self.graphs: dict = {}
        self.pool = torch.cuda.graph_pool_handle() if self.use_graphs else None

    def _body(self, view: int):
        self.cache.write_pos, self.cache.view_len = self.step, view
        r = self.tok.shape[0]
        h = self.text_model(
            input_ids=self.tok[:, None],
            attention_mask={"full_attention": None, "sliding_attention": None},
            position_ids=(self.next_pos + self.step).view(1, r, 1).expand(3, -1, -1),
            past_key_values=self.cache,
            use_cache=True,
        ).last_hidden_state
        return self.model.lm_head(h[:, -1])

    def __call__(self, tok, t: int):
        import torch

        self.tok.copy_(tok)
        self.step.fill_(t)
        view = min((t // self.bucket + 1) * self.bucket, self.max_new)
        if not self.use_graphs:
            return self._body(view)
        if view not in self.graphs:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up outside the capture (writes the same KV the replay writes)
                self._body(view)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                out = self._body(view)
            self.graphs[view] = (graph, out)
        graph, out = self.graphs[view]
        graph.replay()
        return out


_FP32_SCORES_BMM: bool | None = None  # whether this torch's CUDA bmm takes out_dtype (bf16 in, fp32 out)


def _scores(q, k_t):
    """Batched q @ k_t with fp32 results (attention scores keep fp32 precision, as flash attention's do)."""
    global _FP32_SCORES_BMM
    import torch

    if q.is_cuda and q.dtype != torch.float32 and _FP32_SCORES_BMM is not False:
        try:
            out = torch.bmm(q, k_t, out_dtype=torch.float32)
            _FP32_SCORES_BMM = True
            return out
        except (RuntimeError, TypeError):
            _FP32_SCORES_BMM = False
    return torch.bmm(q.float(), k_t.float())


def cascade_attention(q, prompt_k, prompt_v, prompt_bias, suffix_k, suffix_v, suffix_bias, scale: float):
    """Decode attention of R = B×rows sequences (one new token each) whose keys are their prompt's, held ONCE per
    prompt, followed by their own new tokens': the prompt part is read once per prompt for all its rows (every row
    and every query head of a KV head are that KV head's query rows: one batched matmul per prompt and KV head), the
    suffix part per row, and the two softmax parts are joined exactly through their common maximum.

    q (R, Hq, D); prompt_k/v (B, Hkv, L, D); prompt_bias (B, L) float, 0 or -inf (padding); suffix_k/v (R, Hkv, S, D);
    suffix_bias (S,) float 0 / -inf or None. Scores and the softmax in fp32; returns (R, Hq, D) in q's dtype. Reads
    the prompt's keys B times per layer instead of R times: the 17 rows of a diagnosis question (16 samples + greedy)
    or the 8 of a GRPO group share one read."""
    import torch

    r, hq, d = q.shape
    b, hkv, length, _ = prompt_k.shape
    rows, g, s = r // b, hq // hkv, suffix_k.shape[2]
    q = q * scale  # the scale folded into the (small) queries instead of a pass over the scores
    qp = q.reshape(b, rows, hkv, g, d).permute(0, 2, 1, 3, 4).reshape(b * hkv, rows * g, d)
    sp = _scores(qp, prompt_k.reshape(b * hkv, length, d).transpose(1, 2)).view(b, hkv, rows * g, length)
    sp.add_(prompt_bias[:, None, None, :])
    ss = _scores(q.reshape(r * hkv, g, d), suffix_k.reshape(r * hkv, s, d).transpose(1, 2))  # (R*Hkv, G, S)
    if suffix_bias is not None:
        ss.add_(suffix_bias)
    # the joint maximum of each query row over both parts, in the prompt layout (B, Hkv, rows, G)
    m = torch.maximum(sp.amax(-1).view(b, hkv, rows, g), ss.amax(-1).view(b, rows, hkv, g).permute(0, 2, 1, 3))
    ep = sp.sub_(m.reshape(b, hkv, rows * g, 1)).exp_()  # in place: the scores become the unnormalised weights
    es = ss.sub_(m.permute(0, 2, 1, 3).reshape(r * hkv, g, 1)).exp_()

    def to_rows(x):  # (B*Hkv, rows*G, ...) -> (R*Hkv, G, ...)
        return x.reshape(b, hkv, rows, g, *x.shape[2:]).transpose(1, 2).reshape(r * hkv, g, *x.shape[2:])

    denom = to_rows(ep.sum(-1).reshape(b * hkv, rows * g)) + es.sum(-1)
    op = torch.bmm(ep.reshape(b * hkv, rows * g, length).to(prompt_v.dtype), prompt_v.reshape(b * hkv, length, d))
    os_ = torch.bmm(es.to(suffix_v.dtype), suffix_v.reshape(r * hkv, s, d))
    out = (to_rows(op).float() + os_.float()) / denom[..., None]
    return out.reshape(r, hq, d).to(q.dtype)


def varlen_attention_reference(q, k, v, cu_q, cu_k, max_q: int, max_k: int, scale: float, used_k=None):
    """What `_flash_varlen` computes, in plain torch (any device and dtype): attention of packed variable-length
    sequences. q (Tq, H, D), k/v (Tk, Hkv, D); sequence i's queries are q[cu_q[i]:cu_q[i+1]] and its keys
    k[cu_k[i]:cu_k[i] + n_i], n_i = used_k[i] if given else cu_k[i+1] - cu_k[i]; query head h reads key head
    h // (H / Hkv); no causal mask. Returns (out (Tq, H, D) in q's dtype, logsumexp (Tq, H) fp32). The CPU tests run
    the packed cache layout through it."""
    import torch

    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:2], dtype=torch.float32, device=q.device)
    g = q.shape[1] // k.shape[1]
    for i in range(len(cu_q) - 1):
        q0, q1, k0 = int(cu_q[i]), int(cu_q[i + 1]), int(cu_k[i])
        k1 = k0 + int(used_k[i]) if used_k is not None else int(cu_k[i + 1])
        ki = k[k0:k1].float().repeat_interleave(g, 1)  # (n, H, D)
        vi = v[k0:k1].float().repeat_interleave(g, 1)
        scores = torch.einsum("qhd,khd->hqk", q[q0:q1].float() * scale, ki)
        lse[q0:q1] = torch.logsumexp(scores, -1).T
        out[q0:q1] = torch.einsum("hqk,khd->qhd", scores.softmax(-1), vi).to(q.dtype)
    return out, lse


def _flash_varlen(q, k, v, cu_q, cu_k, max_q: int, max_k: int, scale: float, used_k=None):
    """torch's own FlashAttention-2 variable-length kernel (the one SDPA's flash backend runs), returning the
    logsumexp too; the interface of `varlen_attention_reference`."""
    import torch

    out, lse, *_ = torch.ops.aten._flash_attention_forward(
        q, k, v, cu_q, cu_k, max_q, max_k, 0.0, False, False, scale=scale, seqused_k=used_k)
    return out, lse.T  # the varlen kernel's logsumexp is (H, Tq)


_FLASH_VARLEN_OK: dict = {}  # device -> whether `_flash_varlen` ran there


def _varlen_kernel(device, dtype):
    """The variable-length attention kernel for the packed decode layout on this device, or None (the padded layout
    and `cascade_attention`): FlashAttention on CUDA GPUs that run it (sm80+, bf16/fp16; probed once per device)."""
    import torch

    if device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16):
        return None
    if device not in _FLASH_VARLEN_OK:
        try:
            x = torch.zeros(4, 2, 64, dtype=dtype, device=device)
            cu = torch.tensor([0, 4], dtype=torch.int32, device=device)
            _flash_varlen(x, x[:, :1], x[:, :1], cu, cu, 4, 4, 1.0, used_k=cu[1:])
            _FLASH_VARLEN_OK[device] = True
        except (RuntimeError, NotImplementedError, AttributeError):
            _FLASH_VARLEN_OK[device] = False
    return _flash_varlen if _FLASH_VARLEN_OK[device] else None


def merge_attention_parts(out_a, lse_a, out_b, lse_b):
    """Exact softmax attention over the union of two disjoint key sets, from each part's normalised output and
    logsumexp: weights sigmoid(lse_a - lse_b) and its complement, in fp32. out (..., D), lse (...)."""
    import torch

    w = torch.sigmoid(lse_a - lse_b)[..., None]
    return (out_b.float() + (out_a.float() - out_b.float()) * w).to(out_a.dtype)


def varlen_cascade_attention(q, cache: _PrefixCache, layer: int, scale: float):
    """`cascade_attention` over the packed layout: the cache's variable-length kernel over the prompts, and over each
    row's new tokens either `sampling_kernel.suffix_attention_merged` (the cache's `fused_suffix`: that part, the
    join and the unfold in one kernel) or a second call of the variable-length kernel joined through the two
    logsumexps (`merge_attention_parts`).

    The G query heads of a KV head are folded into query positions, so each KV head's keys are read once per prompt
    for all its rows × G heads (prompt part: sequence b = prompt b, rows·G queries, its unpadded keys) and once per
    row for its G heads (suffix part: sequence i = row i, G queries, its written new tokens: `suffix_used`, a device
    tensor, so a CUDA graph replays it at any step). q (R, Hq, D) -> (R, Hq, D)."""
    import torch

    r, hq, d = q.shape
    _, s, hkv, _ = cache.keys[layer].shape
    g, rows = hq // hkv, cache.rows
    if g not in cache.offsets:  # query offsets of the two parts, and the suffix's key offsets: fixed per cache
        dev = q.device
        cache.offsets[g] = (torch.arange(0, r * g + 1, rows * g, dtype=torch.int32, device=dev),
                            torch.arange(0, r * g + 1, g, dtype=torch.int32, device=dev),
                            torch.arange(0, r * s + 1, s, dtype=torch.int32, device=dev))
    cu_prompt, cu_rows, cu_suffix = cache.offsets[g]
    qf = q.reshape(r, hkv, g, d).transpose(1, 2).reshape(r * g, hkv, d)  # query position (row, g), head = KV head
    out_p, lse_p = cache.varlen(qf, cache.prompt_keys[layer], cache.prompt_values[layer], cu_prompt,
                                cache.prompt_offsets, rows * g, cache.prompt_max, scale)
    if cache.fused_suffix:  # one kernel: the new tokens' part, the join and the unfold
        from components.common.sampling_kernel import suffix_attention_merged

        return suffix_attention_merged(qf, cache.keys[layer], cache.values[layer], cache.suffix_used, out_p, lse_p,
                                       scale, g)
    view = cache.view_len if cache.write_pos is not None else cache.attend
    out_s, lse_s = cache.varlen(qf, cache.keys[layer].view(r * s, hkv, d), cache.values[layer].view(r * s, hkv, d),
                                cu_rows, cu_suffix, g, view, scale, used_k=cache.suffix_used)
    out = merge_attention_parts(out_p, lse_p, out_s, lse_s)  # (R·G, Hkv, D)
    return out.reshape(r, g, hkv, d).transpose(1, 2).reshape(r, hq, d)


def _cascade_decode_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, *, cache,
                              **kwargs):
    """The text model's attention while decoding from a `_PrefixCache` (`cascade_attention` over its padded layout,
    `varlen_cascade_attention` over its packed one)."""
    r, hq, lq, d = query.shape
    if lq != 1:
        raise ValueError(f"shared-prefix decoding attends one new token per row, got {lq}")
    layer = module.layer_idx
    scale = scaling if scaling is not None else d**-0.5
    if cache.varlen is not None:
        out = varlen_cascade_attention(query.reshape(r, hq, d), cache, layer, scale)
        return out.reshape(r, 1, hq, d), None
    suffix_k, suffix_v, suffix_bias = cache.suffix(layer)
    out = cascade_attention(query.reshape(r, hq, d), cache.prompt_keys[layer], cache.prompt_values[layer],
                            cache.prompt_bias, suffix_k, suffix_v, suffix_bias, scale)
    return out.reshape(r, 1, hq, d), None


_ATTN_NAME = "medbridge_cascade_decode"


@contextlib.contextmanager
def _decode_attention(text_config, cache):
    """Route the text model's attention through `cascade_attention` over `cache` while decoding (the prefill keeps
    its own)."""
    import functools

    from transformers import AttentionInterface

    AttentionInterface.register(_ATTN_NAME, functools.partial(_cascade_decode_attention, cache=cache))
    old = text_config._attn_implementation
    text_config._attn_implementation = _ATTN_NAME
    try:
        yield
    finally:
        text_config._attn_implementation = old


def sample_next(logits, *, temperature: float, top_p: float, generator, suppress_ids=None):
    """Next tokens from (R, V) logits: temperature, nucleus top-p, suppressed ids never drawn. Exact, no sort.

    The nucleus of a row is every token whose strictly more probable tokens hold less than `top_p` mass (the smallest
    set reaching `top_p`; tokens tied at its edge are all kept). The draw is the exponential race over the nucleus,
    argmax p / Exp(1) noise, which samples exactly ∝ p restricted to it; the nucleus itself is never built: the race
    winner over the whole vocabulary is checked with one masked sum, and a row whose winner lies outside the nucleus
    reruns the race (same noise) among tokens more probable than that winner, which excludes only non-nucleus tokens.
    The result equals the argmax over the explicit nucleus with the same noise; O(V) per round, usually 1-3 rounds
    (most rows finish in the first), instead of an O(V log V) vocabulary sort per step."""
    import torch

    logits = logits.float()
    if suppress_ids is not None and len(suppress_ids):
        logits = logits.clone()
        logits[:, suppress_ids] = float("-inf")
    probs = torch.softmax(logits / temperature, dim=-1)
    noise = torch.empty_like(probs).exponential_(1.0, generator=generator)
    score = probs / noise  # race score: the argmax is a draw ∝ probs (suppressed tokens score 0)
    del noise
    tok = score.argmax(dim=-1)
    if top_p >= 1.0:
        return tok
    return _nucleus_race(probs, score, tok, top_p)


def _triton_kernels(device) -> bool:
    """Whether the project's Triton kernels (`sampling_kernel`) run on `device`: CUDA with Triton present."""
    if device.type != "cuda":
        return False
    from components.common import sampling_kernel

    return sampling_kernel.available(device)


def _fused_sampler(device) -> bool:
    """Whether `shared_prefix_generate` samples with the fused kernel on `device` by default."""
    return _triton_kernels(device)


def _fused_suffix(device) -> bool:
    """Whether the packed decode layout computes its new tokens' attention part, the join with the prompt part and the
    unfold in one kernel (`sampling_kernel.suffix_attention_merged`) on `device`, rather than FlashAttention's
    variable-length kernel and torch ops."""
    return _triton_kernels(device)


def _nucleus_race(probs, score, tok, top_p: float):
    """The race winner restricted to each row's top-p nucleus (see `sample_next`); `tok` is the unrestricted winner."""
    import torch

    out = tok.clone()
    rows = torch.arange(len(tok), device=tok.device)  # rows still being checked
    p_rows, s_rows = probs, score
    while True:
        p_tok = p_rows.gather(-1, tok[:, None])  # (n, 1)
        above = torch.where(p_rows > p_tok, p_rows, 0.0).sum(-1)  # mass strictly more probable than the winner
        outside = above >= top_p
        if not bool(outside.any()):  # one host sync per round
            return out
        sel = outside.nonzero().squeeze(1)
        rows, p_tok = rows[sel], p_tok[sel]
        p_rows, s_rows = probs[rows], score[rows]
        # rerun the race among tokens more probable than the rejected winner (every nucleus token is among them)
        tok = torch.where(p_rows > p_tok, s_rows, -1.0).argmax(dim=-1)
        out[rows] = tok


def shared_prefix_generate(
    model,
    enc: dict,
    *,
    n: int,
    greedy_row: bool,
    max_new_tokens: int,
    temperature: float = 0.7,
    top_p: float = 0.9,
    eos_ids: list[int] | tuple[int, ...] = (),
    pad_id: int = 0,
    suppress_ids: list[int] | tuple[int, ...] = (),
    image_token_id: int | None = None,
    generator=None,
    stats: dict | None = None,
    profile: bool = False,
    cuda_graph: bool = False,
    logprobs: bool = False,
    fused_sampling: bool | None = None,
):
    """Sample `n` continuations (plus one greedy row first when `greedy_row`) of each prompt in `enc`.

    `enc` holds the processor's tensors for B left-padded prompts (input_ids, attention_mask, and pixel_values +
    image_grid_thw for images). The batch is prefilled ONCE and all B×rows sequences, rows = n (+1) per prompt,
    decode together; each prompt's keys/values stay one copy that its rows' attention reads together
    (`cascade_attention`), and each row's new tokens go to a preallocated suffix. Returns a LongTensor (B, rows, T)
    of new tokens, `pad_id` after a sequence's end (eos included, then padding). With no eos ids every row runs to
    `max_new_tokens`.
    `profile` (CUDA): CUDA-event time of the model forward and of sampling per step, added to `stats`.
    `cuda_graph`: decode with static shapes, replaying CUDA graphs of the forward (`_GraphDecode`) instead of running
    the model's Python per layer and step; attention then reads the new tokens in 64-position buckets.
    `logprobs`: also return a float (B, rows, T) tensor of each new token's log-probability under the model's
    temperature-scaled distribution, log_softmax(logits / temperature), before suppression and top-p (what a trainer's
    forward pass computes for the same token; 0 after a sequence's end).
    `fused_sampling`: each step's sampling (temperature, suppression, top-p, the greedy row, finished rows, the
    log-probabilities) in one GPU kernel (`sampling_kernel.fused_sample`: the same draw, no host synchronisation)
    instead of torch ops and `sample_next`; None (default): wherever it runs (CUDA devices with Triton). The kernel
    draws its noise from a seed per step taken from `generator`, so its stream differs from the torch ops' one.
    """
    import time

    import torch

    t0 = time.perf_counter()
    input_ids = enc["input_ids"]
    mask2d = enc["attention_mask"].bool()
    bsz, length = input_ids.shape
    dev = input_ids.device
    rows = n + int(greedy_row)
    model_kwargs = {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask")}
    has_image = model_kwargs.get("pixel_values") is not None
    if has_image and "mm_token_type_ids" not in model_kwargs and image_token_id is not None:
        model_kwargs["mm_token_type_ids"] = (input_ids == image_token_id).int()
    inner = model.model
    text_model = inner.language_model
    with torch.inference_mode():
        # 1. Prefill: the whole batch once, vision tower included. Multimodal RoPE positions come from the model.
        if has_image:
            inner.rope_deltas = None
            out = model(
                input_ids=input_ids, attention_mask=enc["attention_mask"], use_cache=True, logits_to_keep=1, **model_kwargs
            )
            deltas = inner.rope_deltas.reshape(bsz).to(dev)
        else:
            pos = (mask2d.long().cumsum(-1) - 1).clamp(min=0)
            out = model(
                input_ids=input_ids,
                attention_mask=enc["attention_mask"],
                position_ids=pos[None].expand(3, -1, -1),
                use_cache=True,
                logits_to_keep=1,
            )
            deltas = torch.zeros(bsz, dtype=torch.long, device=dev)
        first_logits = out.logits[:, -1].repeat_interleave(rows, dim=0)
        cache = _PrefixCache(out.past_key_values, mask2d, rows, max_new_tokens,
                             varlen=_varlen_kernel(dev, _cache_tensors(out.past_key_values)[0][0].dtype),
                             fused_suffix=_fused_suffix(dev))
        del out
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t_prefill = time.perf_counter() - t0

        # 2. Decode B×rows sequences. Position of the t-th new token: prompt length (unpadded) + rope delta + t.
        r_all = bsz * rows
        next_pos = (mask2d.sum(-1) + deltas).repeat_interleave(rows)
        graph = _GraphDecode(model, text_model, cache, next_pos, max_new_tokens) if cuda_graph else None
        is_greedy = torch.zeros(r_all, dtype=torch.bool, device=dev)
        if greedy_row:
            is_greedy[::rows] = True
        eos = torch.tensor(list(eos_ids), dtype=torch.long, device=dev)
        suppress = torch.tensor(list(suppress_ids), dtype=torch.long, device=dev)
        tokens = torch.full((r_all, max_new_tokens), pad_id, dtype=torch.long, device=dev)
        token_logps = torch.zeros((r_all, max_new_tokens), dtype=torch.float32, device=dev) if logprobs else None
        done = torch.zeros(r_all, dtype=torch.bool, device=dev)
        pad_tok = torch.full((r_all,), pad_id, dtype=torch.long, device=dev)
        logits = first_logits
        if fused_sampling is None:
            fused_sampling = _fused_sampler(dev)
        if fused_sampling:  # one kernel per step, no host sync: a seed per step from the run's generator
            from components.common.sampling_kernel import fused_sample

            seeds = torch.randint(0, 2**62, (max_new_tokens,), dtype=torch.long, device=dev, generator=generator)
            banned = None
            if len(suppress):
                banned = torch.zeros(logits.shape[-1], dtype=torch.uint8, device=dev)
                banned[suppress] = 1
        steps = 0
        timed = profile and dev.type == "cuda"
        events: list = []  # (start, after sampling, after forward) per step
        with _decode_attention(text_model.config, cache):
            for t in range(max_new_tokens):
                if timed:
                    events.append([torch.cuda.Event(enable_timing=True) for _ in range(3)])
                    events[-1][0].record()
                if fused_sampling:
                    drawn = fused_sample(logits, temperature=temperature, top_p=top_p, seed=seeds[t : t + 1],
                                         suppress_mask=banned, done=done, pad_id=pad_id,
                                         greedy_every=rows if greedy_row else 0, logprobs=logprobs)
                    tok = drawn[0] if logprobs else drawn
                    tokens[:, t] = tok
                    if logprobs:
                        token_logps[:, t] = drawn[1]
                else:
                    logits = logits.float()
                    if logprobs:
                        scaled = torch.log_softmax(logits / temperature, dim=-1)
                    if len(suppress):
                        logits[:, suppress] = float("-inf")
                    tok = sample_next(logits, temperature=temperature, top_p=top_p, generator=generator)
                    if greedy_row:
                        tok = torch.where(is_greedy, logits.argmax(-1), tok)
                    tok = torch.where(done, pad_tok, tok)
                    tokens[:, t] = tok
                    if logprobs:
                        token_logps[:, t] = torch.where(done, 0.0, scaled.gather(1, tok[:, None]).squeeze(1))
                        del scaled
                steps = t + 1
                if timed:
                    events[-1][1].record()
                if len(eos):
                    done |= torch.isin(tok, eos)
                    if t % 16 == 15 and bool(done.all()):  # host sync only every 16 steps
                        break
                if t == max_new_tokens - 1:
                    break
                if graph is not None:
                    logits = graph(tok, t)
                    if timed:
                        events[-1][2].record()
                    continue
                h = text_model(
                    input_ids=tok[:, None],
                    attention_mask={"full_attention": None, "sliding_attention": None},
                    position_ids=(next_pos + t).view(1, r_all, 1).expand(3, -1, -1),
                    past_key_values=cache,
                    use_cache=True,
                ).last_hidden_state
                logits = model.lm_head(h[:, -1])
                if timed:
                    events[-1][2].record()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
    if stats is not None:
        stats.update(
            prefill_s=t_prefill,
            decode_s=time.perf_counter() - t0 - t_prefill,
            steps=steps,
            rows=r_all,
            prompt_len=length,
            kv_bytes_allocated=cache.nbytes(),
        )
        if timed:
            stats.update(  # the last step samples only (no forward after it)
                sample_s=sum(e[0].elapsed_time(e[1]) for e in events) / 1e3,
                forward_s=sum(e[1].elapsed_time(e[2]) for e in events[:-1]) / 1e3,
            )
    out = tokens[:, :steps].reshape(bsz, rows, steps)
    if logprobs:
        return out, token_logps[:, :steps].reshape(bsz, rows, steps)
    return out


class TransformersBackend:
    """Qwen2.5-VL through transformers, one prefill per prompt (`shared_prefix_generate`), batched, progress bar."""

    def __init__(self, model_ref: str, cfg: SamplingConfig, model=None, processor=None):
        self.cfg = cfg
        if model is None:
            from components.common.modeling import load_model_and_processor, pick_device, require_liger

            require_liger(cfg.liger_kernels, on_cuda=pick_device(cfg.device).startswith("cuda"))  # before any loading
            model, processor = load_model_and_processor(model_ref, device=cfg.device, liger_kernels=cfg.liger_kernels)
        elif cfg.liger_kernels:
            from components.common.modeling import apply_liger_kernels

            apply_liger_kernels(model)
        self.model, self.processor = model, processor
        tok = processor.tokenizer
        self.suppress_ids = suppressed_token_ids(tok)
        eos = model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if tok.eos_token_id is not None and tok.eos_token_id not in eos:
            eos.append(tok.eos_token_id)
        self.eos_ids = eos
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else eos[0]
        self.image_token_id = getattr(model.config, "image_token_id", None)
        self.use_cuda_graph = getattr(model.device, "type", "cpu") == "cuda"
        self.batch_stats: list[dict] = []  # the last call's batches: prefill/decode seconds, rows, steps (benchmarks)

    def _encode(self, prompts: list[Prompt]):
        return self._encode_host(prompts).to(self.model.device)

    def _encode_host(self, prompts: list[Prompt]):
        """The processor's tensors for a batch of prompts (chat template, image preparation), on the host."""
        texts = [
            self.processor.apply_chat_template(p.messages, add_generation_prompt=True, tokenize=False) for p in prompts
        ]
        images = [p.image for p in prompts if p.image is not None]
        if images and len(images) != len(prompts):
            raise ValueError("a batch mixes prompts with and without images; batch them separately")
        kwargs = {}
        if images and self.cfg.pixel_bounds():
            size = dict(getattr(self.processor.image_processor, "size", None) or {})
            kwargs["images_kwargs"] = {"size": {**size, **self.cfg.pixel_bounds()}}
        return self.processor(text=texts, images=images or None, return_tensors="pt", padding=True, **kwargs)

    def _encode_staged(self, prompts: list[Prompt]):
        """`_encode_host`, its tensors in page-locked memory when the model is on a GPU, so that the copy to the GPU
        (`_run`: non-blocking) runs at full speed behind the work already queued instead of as a pageable copy that
        holds the host between batches."""
        enc = self._encode_host(prompts)
        if getattr(self.model.device, "type", "cpu") == "cuda":
            for key, value in enc.items():
                if hasattr(value, "pin_memory"):
                    enc[key] = value.pin_memory()
        return enc

    def _decode(self, tokens) -> list[Completion]:
        """Texts up to each row's first end token; a row without one ran to max_new_tokens: truncated."""
        rows, cut_off, used = [], [], []
        for seq in tokens.tolist():
            cut = next((i for i, t in enumerate(seq) if t in self.eos_ids), None)
            cut_off.append(cut is None and len(seq) >= self.cfg.max_new_tokens)
            rows.append(seq if cut is None else seq[:cut])
            used.append(len(seq) if cut is None else cut + 1)
        texts = self.processor.tokenizer.batch_decode(rows, skip_special_tokens=True)
        return [Completion(t, c, n) for t, c, n in zip(texts, cut_off, used)]

    def _generate(self, enc: dict, **kwargs):
        """`shared_prefix_generate`, with CUDA-graph decoding on a GPU; eager decoding if graph capture fails."""
        if self.use_cuda_graph:
            try:
                return shared_prefix_generate(self.model, enc, cuda_graph=True, **kwargs)
            except RuntimeError as e:  # e.g. an op that cannot be captured in this torch/transformers version
                import logging

                logging.getLogger(__name__).warning("CUDA-graph decoding failed (%s); decoding eagerly from now on", e)
                self.use_cuda_graph = False
        return shared_prefix_generate(self.model, enc, **kwargs)

    def _run(self, prompts: list[Prompt], n: int, greedy_row: bool, desc: str) -> tuple[list[list[str]], list[str]]:
        """Every prompt's completions, batch by batch. One host thread prepares the next batch's inputs (chat
        template, image preparation) and turns the previous batch's tokens into text while the accelerator samples
        the current one; batches run, and draw from the seeded generator, in the same order either way."""
        from concurrent.futures import ThreadPoolExecutor

        import torch
        from tqdm.auto import tqdm

        gen = torch.Generator(device=self.model.device).manual_seed(self.cfg.seed)
        bs = self.cfg.batch_size
        # Same-shape batches: prompts with images and text-only prompts go in separate batches.
        order = sorted(range(len(prompts)), key=lambda i: prompts[i].image is None)
        groups = [g for start in range(0, len(order), bs)
                  for g in ([i for i in order[start : start + bs] if prompts[i].image is not None],
                            [i for i in order[start : start + bs] if prompts[i].image is None]) if g]
        results: dict[int, tuple[list[Completion], Completion | None]] = {}
        self.batch_stats = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="medbridge-sampler-host") as host:
            # one worker, first in first out: batch k+1's inputs are ready before batch k's texts are made
            pending = host.submit(self._encode_staged, [prompts[i] for i in groups[0]]) if groups else None
            texts_of = []
            for k, group in enumerate(tqdm(groups, desc=desc, unit="batch", disable=None)):
                enc = pending.result().to(self.model.device, non_blocking=True)
                if k + 1 < len(groups):
                    pending = host.submit(self._encode_staged, [prompts[i] for i in groups[k + 1]])
                stats: dict = {}
                toks = self._generate(
                    dict(enc),
                    n=n,
                    greedy_row=greedy_row,
                    max_new_tokens=self.cfg.max_new_tokens,
                    temperature=self.cfg.temperature,
                    top_p=self.cfg.top_p,
                    eos_ids=self.eos_ids,
                    pad_id=self.pad_id,
                    suppress_ids=self.suppress_ids,
                    image_token_id=self.image_token_id,
                    generator=gen,
                    stats=stats,
                )
                self.batch_stats.append(stats)
                b, rows, t = toks.shape
                texts_of.append((group, rows, host.submit(self._decode, toks.reshape(b * rows, t).cpu())))
            for group, rows, texts in texts_of:
                texts = texts.result()
                for j, i in enumerate(group):
                    row = texts[j * rows : (j + 1) * rows]
                    results[i] = (row[int(greedy_row) :], row[0] if greedy_row else None)
        samples = [results[i][0] for i in range(len(prompts))]
        greedy = [results[i][1] for i in range(len(prompts))]
        return samples, greedy

    def sample(self, prompts: list[Prompt], n: int) -> list[list[str]]:
        return self._run(prompts, n, greedy_row=False, desc=f"sampling K={n}")[0]

    def greedy(self, prompts: list[Prompt]) -> list[str]:
        return self._run(prompts, 0, greedy_row=True, desc="greedy")[1]

    def sample_and_greedy(self, prompts: list[Prompt], n: int) -> tuple[list[list[str]], list[str]]:
        """K samples and the greedy completion of every prompt from one prefill (greedy = one extra row)."""
        return self._run(prompts, n, greedy_row=True, desc=f"sampling K={n} + greedy")


# --------------------------------------------------------------------------------------------------------------
# vLLM (production)
# --------------------------------------------------------------------------------------------------------------


def build_vllm_requests(prompts: list[Prompt], apply_chat_template) -> list[dict]:
    """vLLM `LLM.generate` inputs: chat-templated text plus the image as `multi_modal_data` (pure; no vLLM needed).

    `apply_chat_template(messages) -> str` is the model's template with the generation prompt added, which puts
    Qwen2.5-VL's `<|vision_start|><|image_pad|><|vision_end|>` placeholder where the image goes."""
    requests = []
    for i, p in enumerate(prompts):
        text = apply_chat_template(p.messages)
        if not isinstance(text, str) or not text:
            raise ValueError(f"prompt {i}: the chat template returned no text")
        req: dict[str, Any] = {"prompt": text}
        if p.image is not None:
            if "<|image_pad|>" not in text:
                raise ValueError(f"prompt {i}: has an image but its templated text has no <|image_pad|> placeholder")
            req["multi_modal_data"] = {"image": p.image}
        requests.append(req)
    return requests


def vllm_sampling_kwargs(cfg: SamplingConfig, n: int, greedy: bool = False) -> dict:
    """Keyword arguments for `vllm.SamplingParams` (greedy: temperature 0, one sample)."""
    if greedy:
        return {"n": 1, "temperature": 0.0, "max_tokens": cfg.max_new_tokens, "seed": cfg.seed}
    return {"n": n, "temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_new_tokens, "seed": cfg.seed}


def vllm_engine_kwargs(cfg: SamplingConfig, model_dir: str) -> dict:
    kwargs = {
        "model": model_dir,
        "tensor_parallel_size": cfg.tensor_parallel_size,
        "gpu_memory_utilization": cfg.gpu_memory_utilization,
        "max_model_len": cfg.max_model_len,
        "enable_prefix_caching": True,  # the K samples and the greedy pass reuse each prompt's prefill
        "limit_mm_per_prompt": {"image": 1},
        "seed": cfg.seed,
    }
    pixels = {k: v for k, v in (("min_pixels", cfg.min_pixels), ("max_pixels", cfg.max_pixels)) if v}
    if pixels:  # Qwen2.5-VL's processor arguments, as the paper's inference code passes them per image
        kwargs["mm_processor_kwargs"] = pixels
    return kwargs


class VLLMBackend:
    """vLLM offline engine: `SamplingParams(n=K)` per request, prefix caching, tensor parallel."""

    def __init__(self, model_ref: str, cfg: SamplingConfig):
        from vllm import LLM  # lazy: only the serve image has vLLM

        from components.common.modeling import load_processor, resolve_model_dir

        self.cfg = cfg
        src = resolve_model_dir(model_ref)
        self.processor = load_processor(src)
        self.llm = LLM(**vllm_engine_kwargs(cfg, src))

    def _template(self, messages: list[dict]) -> str:
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def _generate(self, prompts: list[Prompt], n: int, greedy: bool) -> list[list[Completion]]:
        from vllm import SamplingParams

        params = SamplingParams(**vllm_sampling_kwargs(self.cfg, n, greedy))
        outs = self.llm.generate(build_vllm_requests(prompts, self._template), params, use_tqdm=True)
        return [[Completion(o.text, o.finish_reason == "length", len(o.token_ids)) for o in r.outputs] for r in outs]

    def sample(self, prompts: list[Prompt], n: int) -> list[list[Completion]]:
        return self._generate(prompts, n, greedy=False)

    def greedy(self, prompts: list[Prompt]) -> list[Completion]:
        return [c[0] for c in self._generate(prompts, 1, greedy=True)]

    def sample_and_greedy(self, prompts: list[Prompt], n: int) -> tuple[list[list[Completion]], list[Completion]]:
        return self.sample(prompts, n), self.greedy(prompts)


def make_backend(cfg: SamplingConfig, model_ref: str) -> SamplingBackend:
    if cfg.backend == "transformers":
        return TransformersBackend(model_ref, cfg)
    if cfg.backend == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise ValueError(
                "backend='vllm' needs vLLM, which this image lacks: run on the serve image "
                "(components.common.images.SERVE_IMAGE) or choose backend='transformers'"
            ) from None
        return VLLMBackend(model_ref, cfg)
    raise ValueError(f"backend={cfg.backend!r} is not known; choose one of {', '.join(BACKENDS)}")
