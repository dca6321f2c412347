"""Sampling backends behind one interface: K sampled completions and one greedy completion per prompt.

    backend = make_backend(SamplingConfig(backend="transformers"), "path/or/hub-id")
    samples = backend.sample(prompts, n=16)                  # list (per prompt) of 16 strings
    greedy  = backend.greedy(prompts)                        # list of strings
    samples, greedy = backend.sample_and_greedy(prompts, 16) # both from ONE prefill per prompt

A prompt is a `Prompt(messages, image)`: chat messages in the Qwen2.5-VL form plus an optional PIL image.

Backends
- `transformers` (embedded default, CPU and GPU fallback): `shared_prefix_generate` encodes each prompt and image
  ONCE (one prefill of the batch, vision tower included), copies the prompt's KV cache into K (+1 greedy) rows of a
  preallocated cache and decodes all B×(K+1) rows together: no K-fold prefill, no cache re-concatenation per step,
  and grouped-query attention without repeating the KV heads. Positions follow Qwen2.5-VL's multimodal RoPE
  (`rope_deltas` from the prefill).
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

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r} is not known; choose one of {', '.join(BACKENDS)}")
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


class SamplingBackend(Protocol):
    def sample(self, prompts: list[Prompt], n: int) -> list[list[str]]: ...

    def greedy(self, prompts: list[Prompt]) -> list[str]: ...

    def sample_and_greedy(self, prompts: list[Prompt], n: int) -> tuple[list[list[str]], list[str]]: ...


# --------------------------------------------------------------------------------------------------------------
# Shared-prefix decoding on top of a Hugging Face Qwen2.5-VL model
# --------------------------------------------------------------------------------------------------------------


class _PrefixCache:
    """A preallocated KV cache for R = B×rows sequences that share their prompt's prefill.

    `update` writes the new token's keys/values at the current position and returns views up to it, so attention
    reads only the filled part and nothing is re-concatenated per step. Implements what the text model calls."""

    is_compileable = False

    def __init__(self, prefill_cache, rows: int, max_new_tokens: int):
        self.keys: list = []
        self.values: list = []
        for k, v in _cache_tensors(prefill_cache):
            b, h, length, d = k.shape
            kk = k.new_empty((b * rows, h, length + max_new_tokens, d))
            vv = v.new_empty((b * rows, h, length + max_new_tokens, v.shape[-1]))
            kk[:, :, :length] = k.repeat_interleave(rows, dim=0)
            vv[:, :, :length] = v.repeat_interleave(rows, dim=0)
            self.keys.append(kk)
            self.values.append(vv)
        self.length = length

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        pos = self.length
        n = key_states.shape[-2]
        self.keys[layer_idx][:, :, pos : pos + n] = key_states
        self.values[layer_idx][:, :, pos : pos + n] = value_states
        if layer_idx == len(self.keys) - 1:
            self.length += n
        return self.keys[layer_idx][:, :, : pos + n], self.values[layer_idx][:, :, : pos + n]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.length

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)


def _cache_tensors(cache) -> list[tuple[Any, Any]]:
    """(keys, values) per layer of a transformers Cache (5.x `layers`), or of a legacy tuple cache."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(k, v) for k, v in cache]


def _gqa_decode_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention for one query token per sequence without repeating KV heads: the q heads sharing a KV head are
    laid out as that head's query rows. `attention_mask` is a bool (R, 1, 1, S) mask, True = attend."""
    import torch.nn.functional as F

    r, hq, lq, d = query.shape
    hkv = key.shape[1]
    if lq == 1 and hq != hkv:
        q = query.reshape(r, hkv, hq // hkv, d)
        out = F.scaled_dot_product_attention(q, key, value, attn_mask=attention_mask, scale=scaling)
        return out.reshape(r, hq, 1, d).transpose(1, 2), None
    if hq != hkv:  # several query tokens: plain repeat (not the decode hot path)
        key = key.repeat_interleave(hq // hkv, dim=1)
        value = value.repeat_interleave(hq // hkv, dim=1)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, scale=scaling)
    return out.transpose(1, 2).contiguous(), None


_ATTN_NAME = "medbridge_gqa_decode"


@contextlib.contextmanager
def _decode_attention(text_config):
    """Route the text model's attention through `_gqa_decode_attention` while decoding (prefill keeps its own)."""
    from transformers import AttentionInterface

    AttentionInterface.register(_ATTN_NAME, _gqa_decode_attention)
    old = text_config._attn_implementation
    text_config._attn_implementation = _ATTN_NAME
    try:
        yield
    finally:
        text_config._attn_implementation = old


def _categorical(p, generator):
    """One draw per row from unnormalised probabilities `p` (exact: argmax p / Exp(1) noise, no sort, no cumsum)."""
    import torch

    q = torch.empty_like(p).exponential_(1.0, generator=generator)
    return (p / q).argmax(dim=-1)


def sample_next(logits, *, temperature: float, top_p: float, generator, suppress_ids=None, candidates: int = 1024):
    """Next tokens from (R, V) logits: temperature, nucleus top-p, suppressed ids never drawn.

    Top-p looks at the `candidates` most probable tokens first (a top-k select, not a full-vocabulary sort) and
    sorts the whole vocabulary only when those do not reach `top_p` mass for some row; the result is exact."""
    import torch

    logits = logits.float()
    if suppress_ids is not None and len(suppress_ids):
        logits = logits.clone()
        logits[:, suppress_ids] = float("-inf")
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p >= 1.0:
        return _categorical(probs, generator)
    kk = min(candidates, probs.shape[-1])
    vals, idx = probs.topk(kk, dim=-1)
    if kk < probs.shape[-1] and not bool((vals.sum(-1) >= top_p).all()):
        vals, idx = probs.sort(dim=-1, descending=True)
    before = vals.cumsum(dim=-1) - vals  # probability mass ranked above each token
    vals = vals.masked_fill(before >= top_p, 0.0)  # keep the smallest set reaching top_p
    return idx.gather(-1, _categorical(vals, generator)[:, None]).squeeze(-1)


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
):
    """Sample `n` continuations (plus one greedy row first when `greedy_row`) of each prompt in `enc`.

    `enc` holds the processor's tensors for B left-padded prompts (input_ids, attention_mask, and pixel_values +
    image_grid_thw for images). The batch is prefilled ONCE; its KV cache is copied into rows = n (+1) per prompt
    and all B×rows sequences decode together. Returns a LongTensor (B, rows, T) of new tokens, `pad_id` after a
    sequence's end (eos included, then padding). With no eos ids every row runs to `max_new_tokens`.
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
        cache = _PrefixCache(out.past_key_values, rows, max_new_tokens)
        del out
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t_prefill = time.perf_counter() - t0

        # 2. Decode B×rows sequences. Position of the t-th new token: prompt length (unpadded) + rope delta + t.
        r_all = bsz * rows
        next_pos = (mask2d.sum(-1) + deltas).repeat_interleave(rows)
        attn = torch.zeros((r_all, 1, 1, length + max_new_tokens), dtype=torch.bool, device=dev)
        attn[:, 0, 0, :length] = mask2d.repeat_interleave(rows, dim=0)
        is_greedy = torch.zeros(r_all, dtype=torch.bool, device=dev)
        if greedy_row:
            is_greedy[::rows] = True
        eos = torch.tensor(list(eos_ids), dtype=torch.long, device=dev)
        suppress = torch.tensor(list(suppress_ids), dtype=torch.long, device=dev)
        tokens = torch.full((r_all, max_new_tokens), pad_id, dtype=torch.long, device=dev)
        done = torch.zeros(r_all, dtype=torch.bool, device=dev)
        logits = first_logits
        steps = 0
        with _decode_attention(text_model.config):
            for t in range(max_new_tokens):
                logits = logits.float()
                if len(suppress):
                    logits[:, suppress] = float("-inf")
                tok = sample_next(logits, temperature=temperature, top_p=top_p, generator=generator)
                if greedy_row:
                    tok = torch.where(is_greedy, logits.argmax(-1), tok)
                tok = torch.where(done, torch.full_like(tok, pad_id), tok)
                tokens[:, t] = tok
                steps = t + 1
                if len(eos):
                    done |= torch.isin(tok, eos)
                    if t % 16 == 15 and bool(done.all()):  # host sync only every 16 steps
                        break
                if t == max_new_tokens - 1:
                    break
                attn[:, 0, 0, length + t] = True
                h = text_model(
                    input_ids=tok[:, None],
                    attention_mask={"full_attention": attn[..., : length + t + 1], "sliding_attention": attn[..., : length + t + 1]},
                    position_ids=(next_pos + t).view(1, r_all, 1).expand(3, -1, -1),
                    past_key_values=cache,
                    use_cache=True,
                ).last_hidden_state
                logits = model.lm_head(h[:, -1])
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
    return tokens[:, :steps].reshape(bsz, rows, steps)


class TransformersBackend:
    """Qwen2.5-VL through transformers, one prefill per prompt (`shared_prefix_generate`), batched, progress bar."""

    def __init__(self, model_ref: str, cfg: SamplingConfig, model=None, processor=None):
        self.cfg = cfg
        if model is None:
            from components.common.modeling import load_model_and_processor

            model, processor = load_model_and_processor(model_ref, device=cfg.device)
        self.model, self.processor = model, processor
        tok = processor.tokenizer
        ids = [tok.convert_tokens_to_ids(t) for t in SUPPRESSED_TOKENS]
        self.suppress_ids = [i for i in ids if isinstance(i, int) and i != tok.unk_token_id]
        eos = model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if tok.eos_token_id is not None and tok.eos_token_id not in eos:
            eos.append(tok.eos_token_id)
        self.eos_ids = eos
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else eos[0]
        self.image_token_id = getattr(model.config, "image_token_id", None)

    def _encode(self, prompts: list[Prompt]):
        texts = [
            self.processor.apply_chat_template(p.messages, add_generation_prompt=True, tokenize=False) for p in prompts
        ]
        images = [p.image for p in prompts if p.image is not None]
        if images and len(images) != len(prompts):
            raise ValueError("a batch mixes prompts with and without images; batch them separately")
        enc = self.processor(text=texts, images=images or None, return_tensors="pt", padding=True)
        return enc.to(self.model.device)

    def _decode(self, tokens) -> list[str]:
        rows = []
        for seq in tokens.tolist():
            cut = next((i for i, t in enumerate(seq) if t in self.eos_ids), len(seq))
            rows.append(seq[:cut])
        return self.processor.tokenizer.batch_decode(rows, skip_special_tokens=True)

    def _run(self, prompts: list[Prompt], n: int, greedy_row: bool, desc: str) -> tuple[list[list[str]], list[str]]:
        import torch
        from tqdm.auto import tqdm

        gen = torch.Generator(device=self.model.device).manual_seed(self.cfg.seed)
        samples: list[list[str]] = []
        greedy: list[str] = []
        bs = self.cfg.batch_size
        # Same-shape batches: prompts with images and text-only prompts go in separate batches.
        order = sorted(range(len(prompts)), key=lambda i: prompts[i].image is None)
        results: dict[int, tuple[list[str], str | None]] = {}
        for start in tqdm(range(0, len(order), bs), desc=desc, unit="batch", disable=None):
            idx = order[start : start + bs]
            groups = [[i for i in idx if prompts[i].image is not None], [i for i in idx if prompts[i].image is None]]
            for group in groups:
                if not group:
                    continue
                enc = self._encode([prompts[i] for i in group])
                toks = shared_prefix_generate(
                    self.model,
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
                )
                b, rows, t = toks.shape
                texts = self._decode(toks.reshape(b * rows, t))
                for j, i in enumerate(group):
                    row = texts[j * rows : (j + 1) * rows]
                    results[i] = (row[int(greedy_row) :], row[0] if greedy_row else None)
        for i in range(len(prompts)):
            s, g = results[i]
            samples.append(s)
            greedy.append(g)
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
    return {
        "model": model_dir,
        "tensor_parallel_size": cfg.tensor_parallel_size,
        "gpu_memory_utilization": cfg.gpu_memory_utilization,
        "max_model_len": cfg.max_model_len,
        "enable_prefix_caching": True,  # the K samples and the greedy pass reuse each prompt's prefill
        "limit_mm_per_prompt": {"image": 1},
        "seed": cfg.seed,
    }


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

    def _generate(self, prompts: list[Prompt], n: int, greedy: bool) -> list[list[str]]:
        from vllm import SamplingParams

        params = SamplingParams(**vllm_sampling_kwargs(self.cfg, n, greedy))
        outs = self.llm.generate(build_vllm_requests(prompts, self._template), params, use_tqdm=True)
        return [[o.text for o in r.outputs] for r in outs]

    def sample(self, prompts: list[Prompt], n: int) -> list[list[str]]:
        return self._generate(prompts, n, greedy=False)

    def greedy(self, prompts: list[Prompt]) -> list[str]:
        return [c[0] for c in self._generate(prompts, 1, greedy=True)]

    def sample_and_greedy(self, prompts: list[Prompt], n: int) -> tuple[list[list[str]], list[str]]:
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
