"""Sampling throughput for the diagnosis: naive `generate(num_return_sequences=K)` against MedBridge's shared-prefix
sampler (`components.common.sampling.shared_prefix_generate`), in one run, on the same workload.

    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 benchmarks/sampling.py --questions 256 --k 16 --new-tokens 256 \
        --prompt-len 320 --naive-batches 2 --batches 16g,64,64g 2>&1 | tee sampling.log
    ... --batches 16,64 --profile-rows 1024      # eager decoding, plus the per-part timing of a 1,024-row step
    PYTHONPATH=. python3 benchmarks/sampling.py --quick          # small shapes: correctness + a speed smoke test

Workload: a Qwen2.5-VL-7B-shaped model with RANDOM weights built from the real config values (bf16, sdpa), no
tokenizer: each prompt is random token ids with one 224×224 image (64 image tokens after the 2×2 merge, random
pixel values), `--prompt-len` tokens in all. Every sequence is forced to exactly `--new-tokens` new tokens (eos
disabled), sampled at temperature 0.7, top-p 0.9, vision placeholder tokens suppressed. tokens/s counts generated
tokens over wall time including prefill (and the vision tower). The naive baseline runs `--naive-batches` batches
of 16 prompts of the same workload (each batch is the same shape, so its rate holds for the whole set).

The decode memory-bandwidth bound: per step, the text model's weights plus every row's KV cache up to that step are
read once; bound = bytes / HBM bandwidth (measured here with a device-to-device copy, and the nominal figure). The
compute bound: 2 FLOPs per text weight (lm_head included) per row plus the attention FLOPs, at the nominal dense bf16
peak (989 TFLOP/s on H100 SXM and H200). A step cannot beat the larger of the two (the roofline bound); at 1,024 rows
the compute bound is the larger.

`--profile-rows R` first times the parts of a decode step at R rows with CUDA events: the top-p sampler against the
previous sort-based one on the same logits, and decode attention with and without a padding mask; the shared-prefix
runs also report their per-step time split into model forward and sampling. `--kernel-profile P` profiles the
decode of P prompts x (K + 1) rows (the diagnosis's shape: K samples and the greedy row) and prints the device time
of a step by kind of kernel, which says what the step is bound by (`--kernel-profile-steps 255`: averaged over the
diagnosis's whole 256-token decode, where the attention weighs more than in a short one). `--attention-parts P`
times the decode attention's parts at P prompts x (K + 1) rows against their bandwidth floors, and the new tokens'
part as FlashAttention + the torch join against the one-kernel `suffix_attention_merged` at several tile shapes
(`--attention-only`: that alone, no model).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

from benchmarks.qwen25vl_7b import QWEN25_VL_7B

SUPPRESS = [151652, 151653, 151655, 151656, 151644]  # vision start/end, image/video pad, <|im_start|>
NOMINAL_BW = {"H100": 3.35e12, "H200": 4.8e12}
NOMINAL_BF16_FLOPS = {"H100": 989e12, "H200": 989e12}  # dense, SXM
DEVICE = "cuda"


def _sync():
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def build_model(small: bool):
    import copy

    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    cfg = copy.deepcopy(QWEN25_VL_7B)
    if small:  # same architecture, fewer layers: for the quick check
        cfg["text_config"]["num_hidden_layers"] = 4
        cfg["vision_config"]["depth"] = 8
        cfg["vision_config"]["fullatt_block_indexes"] = [3, 7]
    config = Qwen2_5_VLConfig(**cfg)
    torch.manual_seed(0)
    with torch.device(DEVICE):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16, attn_implementation="sdpa")
    model.eval()
    model.generation_config.pad_token_id = 151643
    return model


def make_prompts(n: int, prompt_len: int, seed: int = 0):
    """n prompts of prompt_len tokens each: 14 text tokens, one 224 px image (64 tokens), the rest text."""
    import torch

    g = torch.Generator().manual_seed(seed)
    n_img = 64
    head, tail = 14, prompt_len - 14 - n_img - 2
    ids = torch.randint(0, 150000, (n, prompt_len), generator=g)
    ids[:, head] = 151652
    ids[:, head + 1 : head + 1 + n_img] = 151655
    ids[:, head + 1 + n_img] = 151653
    assert tail > 0
    pixel_values = torch.randn(n * 256, 3 * 2 * 14 * 14, generator=g)  # 16×16 patches per image
    grid = torch.tensor([[1, 16, 16]] * n)
    return ids, pixel_values, grid


def batch_inputs(ids, pix, grid, start, size, device):
    import torch

    sl = slice(start, start + size)
    input_ids = ids[sl].to(device)
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values": pix[start * 256 : (start + size) * 256].to(device, torch.bfloat16),
        "image_grid_thw": grid[sl].to(device),
        "mm_token_type_ids": (input_ids == 151655).int(),
    }


def measure_bandwidth(gib: float = 4.0) -> float:
    import torch

    n = int(gib * 2**30) // 2
    x = torch.empty(n, dtype=torch.bfloat16, device="cuda")
    y = torch.empty_like(x)
    y.copy_(x)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        y.copy_(x)
    torch.cuda.synchronize()
    bw = 2 * n * 2 * 10 / (time.perf_counter() - t)  # read + write
    del x, y
    torch.cuda.empty_cache()
    return bw


def decode_bytes(model, rows: int, prompt_len: int, steps: int, prompts: int | None = None) -> tuple[float, float]:
    """(bytes of text weights read per step, KV bytes read over all steps). With `prompts` (the sampler reads each
    prompt's keys/values once for all its rows) the prompt part counts once per prompt, else once per row."""
    tc = model.config.text_config
    lm = model.model.language_model
    w = sum(p.numel() * p.element_size() for p in lm.parameters()) + model.lm_head.weight.numel() * 2
    w -= lm.embed_tokens.weight.numel() * 2  # embedding rows are gathered, not streamed
    head_dim = tc.hidden_size // tc.num_attention_heads
    per_tok = tc.num_hidden_layers * 2 * tc.num_key_value_heads * head_dim * 2
    prompt_reads = prompts if prompts is not None else rows
    kv = sum((prompt_reads * prompt_len + rows * (t + 1)) * per_tok for t in range(steps - 1))
    return w, kv


def decode_flops(model, rows: int, prompt_len: int, steps: int) -> float:
    """FLOPs of the decode forwards of one batch: 2 per text weight per row, plus attention (QK and PV)."""
    tc = model.config.text_config
    lm = model.model.language_model
    w = sum(p.numel() for p in lm.parameters()) - lm.embed_tokens.weight.numel() + model.lm_head.weight.numel()
    attn = sum(4 * rows * tc.num_attention_heads * (prompt_len + t + 1) * (tc.hidden_size // tc.num_attention_heads)
               for t in range(steps - 1)) * tc.num_hidden_layers
    return 2 * w * rows * (steps - 1) + attn


def sample_next_sorted(logits, *, temperature, top_p, generator, candidates=1024):
    """The previous top-p sampler (top-`candidates` select, full-vocabulary sort when those miss top_p), for timing."""
    import torch

    probs = torch.softmax(logits.float() / temperature, dim=-1)
    kk = min(candidates, probs.shape[-1])
    vals, idx = probs.topk(kk, dim=-1)
    if kk < probs.shape[-1] and not bool((vals.sum(-1) >= top_p).all()):
        vals, idx = probs.sort(dim=-1, descending=True)
    before = vals.cumsum(dim=-1) - vals
    vals = vals.masked_fill(before >= top_p, 0.0)
    q = torch.empty_like(vals).exponential_(1.0, generator=generator)
    return idx.gather(-1, (vals / q).argmax(dim=-1)[:, None]).squeeze(-1)


def _cuda_ms(fn, reps: int = 5) -> float:
    import torch

    fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(reps):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / reps


def profile_parts(model, rows: int, prompt_len: int, new_tokens: int) -> dict:
    """CUDA-event times of decode-step parts at `rows` rows (logits from the model's lm_head on random states)."""
    import torch
    import torch.nn.functional as F

    from components.common.sampling import sample_next

    tc = model.config.text_config
    g = torch.Generator(device=DEVICE).manual_seed(0)
    with torch.inference_mode():
        h = model.model.language_model.norm(torch.randn(rows, tc.hidden_size, device=DEVICE, dtype=torch.bfloat16))
        logits = model.lm_head(h).float()
        logits[:, SUPPRESS] = float("-inf")
        probs = torch.softmax(logits / 0.7, -1)
        nucleus = (probs.sort(-1, descending=True)[0].cumsum(-1) < 0.9).sum(-1).float().mean().item() + 1
        res = {"rows": rows, "mean_nucleus_tokens": nucleus,
               "lm_head_ms": _cuda_ms(lambda: model.lm_head(h)),
               "sampler_sorted_ms": _cuda_ms(lambda: sample_next_sorted(logits, temperature=0.7, top_p=0.9, generator=g)),
               "sampler_new_ms": _cuda_ms(lambda: sample_next(logits, temperature=0.7, top_p=0.9, generator=g)),
               "softmax_ms": _cuda_ms(lambda: torch.softmax(logits / 0.7, -1)),
               "sort_ms": _cuda_ms(lambda: probs.sort(-1, descending=True))}
        hkv, d = tc.num_key_value_heads, tc.hidden_size // tc.num_attention_heads
        s_len = prompt_len + new_tokens // 2
        q = torch.randn(rows, hkv, tc.num_attention_heads // hkv, d, device=DEVICE, dtype=torch.bfloat16)
        kv = torch.randn(rows, hkv, prompt_len + new_tokens, d, device=DEVICE, dtype=torch.bfloat16)
        k = kv[:, :, :s_len]
        mask = torch.ones(rows, 1, 1, prompt_len + new_tokens, dtype=torch.bool, device=DEVICE)[..., :s_len]
        res["attention_layer_masked_ms"] = _cuda_ms(lambda: F.scaled_dot_product_attention(q, k, k, attn_mask=mask))
        res["attention_layer_nomask_ms"] = _cuda_ms(lambda: F.scaled_dot_product_attention(q, k, k))
        res["attention_kv_len"] = s_len
    return res


def kernel_profile(model, ids, pix, grid, k: int, prompts: int, steps: int = 32,
                   modes: tuple[str, ...] = ("eager", "graphs")) -> dict:
    """Device milliseconds per decode step by kind of kernel (`benchmarks.gpu_profile`) at `prompts` x (k + 1) rows,
    eager and/or with CUDA graphs (`modes`): one profiled call decoding `steps` tokens minus one that only prefills,
    so the figures average over a decode of `steps` new tokens (the attention reads a suffix that grows with it)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.gpu_profile import kernel_time_by_category, kernel_time_by_name

    def traced(new_tokens: int, graphs: bool):
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            run_shared(model, ids, pix, grid, k, new_tokens, prompts, prompts, greedy_row=True, cuda_graph=graphs)
            torch.cuda.synchronize()
        return kernel_time_by_category(prof), kernel_time_by_name(prof)

    out = {"rows": prompts * (k + 1), "steps": steps}
    for graphs in [m == "graphs" for m in modes]:
        run_shared(model, ids, pix, grid, k, steps + 1, prompts, prompts, greedy_row=True, cuda_graph=graphs)  # warm
        (full, full_n), (prefill, prefill_n) = traced(steps + 1, graphs), traced(1, graphs)
        out["graphs" if graphs else "eager"] = {c: 1e3 * (full[c] - prefill[c]) / steps for c in full}
        out["prefill_ms"] = {c: 1e3 * prefill[c] for c in prefill}  # the batch's prefill alone, device ms by kind
        out["prefill_top_kernels"] = {n: 1e3 * t for n, t in sorted(prefill_n.items(), key=lambda kv: -kv[1])[:15]}
        if graphs:  # the heaviest kernels of a decode step, ms per step
            per = {n: 1e3 * (t - prefill_n.get(n, 0.0)) / steps for n, t in full_n.items()}
            out["top_kernels_graphs"] = dict(sorted(per.items(), key=lambda kv: -kv[1])[:25])
    return out


ATTENTION_CONFIGS = ((32, 2), (32, 4), (64, 4), (64, 8), (128, 4), (128, 8))  # (block_n, num_warps) of the new-token kernel


def attention_parts(tc, prompts: int, k: int, prompt_len: int, new_tokens: int,
                    suffix_lens: tuple[int, ...] = (32, 128, 255)) -> dict:
    """CUDA-event milliseconds per decode step (all layers) of the packed layout's attention at the diagnosis shape,
    `prompts` x (k + 1) rows of the text config `tc`: the prompt part (each prompt's keys read once for its rows), the
    new tokens' part and the join, at several counts of new tokens, beside each part's bandwidth floor (its K/V bytes
    over the measured copy bandwidth). Random K/V. The new tokens' part two ways: FlashAttention's variable-length
    kernel then the join in torch ops, and the one-kernel `suffix_attention_merged` at several tile shapes
    (`ATTENTION_CONFIGS`; its largest difference from the first way is reported)."""
    import torch

    from components.common import sampling
    from components.common.sampling_kernel import suffix_attention_merged

    hq, hkv = tc.num_attention_heads, tc.num_key_value_heads
    d, g, layers = tc.hidden_size // hq, hq // hkv, tc.num_hidden_layers
    rows, r = k + 1, prompts * (k + 1)
    kernel = sampling._varlen_kernel(torch.device(DEVICE), torch.bfloat16)
    if kernel is None:
        return {"skipped": "no variable-length attention kernel on this device"}
    bw = measure_bandwidth()
    t = dict(device=DEVICE, dtype=torch.bfloat16)
    pk, pv = (torch.randn(prompts * prompt_len, hkv, d, **t) for _ in range(2))
    sk, sv = (torch.randn(r, new_tokens, hkv, d, **t) for _ in range(2))
    qf = torch.randn(r * g, hkv, d, **t)
    i32 = dict(dtype=torch.int32, device=DEVICE)
    cu_prompt, cu_rows = torch.arange(0, r * g + 1, rows * g, **i32), torch.arange(0, r * g + 1, g, **i32)
    cu_suffix = torch.arange(0, r * new_tokens + 1, new_tokens, **i32)
    cu_keys = torch.arange(0, prompts * prompt_len + 1, prompt_len, **i32)
    scale = d**-0.5
    out: dict = {"rows": r, "prompts": prompts, "prompt_len": prompt_len, "bandwidth": bw}
    with torch.inference_mode():
        prompt = lambda: kernel(qf, pk, pv, cu_prompt, cu_keys, rows * g, prompt_len, scale)  # noqa: E731
        out["prompt_ms"] = layers * _cuda_ms(prompt)
        out["prompt_floor_ms"] = layers * 1e3 * 2 * pk.numel() * 2 / bw
        op, lp = prompt()
        for s_len in suffix_lens:
            used = torch.full((r,), s_len, **i32)
            suffix = lambda: kernel(qf, sk.view(-1, hkv, d), sv.view(-1, hkv, d), cu_rows, cu_suffix, g,  # noqa: E731
                                    new_tokens, scale, used_k=used)
            os_, ls = suffix()
            join = lambda: sampling.merge_attention_parts(op, lp, os_, ls).reshape(r, g, hkv, d).transpose(1, 2)  # noqa: E731
            want = join().reshape(r, hq, d).float()
            part = {"flash_suffix_ms": layers * _cuda_ms(suffix),
                    "torch_join_ms": layers * _cuda_ms(lambda: join().reshape(r, hq, d)),
                    "suffix_floor_ms": layers * 1e3 * 2 * r * s_len * hkv * d * 2 / bw}
            for bn, w in ATTENTION_CONFIGS:
                fused = lambda: suffix_attention_merged(qf, sk, sv, used, op, lp, scale, g, block_n=bn,  # noqa: E731
                                                        num_warps=w)
                part[f"one_kernel_{bn}x{w}_ms"] = layers * _cuda_ms(fused)
                part[f"one_kernel_{bn}x{w}_max_diff"] = float((fused().float() - want).abs().max())
            out[f"suffix_{s_len}"] = part
    return out


@contextlib.contextmanager
def _sampler_choice(name: str, replacement):
    """The sampler module's choice function `name` replaced by `replacement` in the block (None: left as it is)."""
    from components.common import sampling

    chosen = getattr(sampling, name)
    if replacement is not None:
        setattr(sampling, name, replacement)
    try:
        yield
    finally:
        setattr(sampling, name, chosen)


def decode_layout(layout: str):
    """`auto`: the sampler's own choice of decode-cache layout; `padded`: the padded layout and the batched-matmul
    cascade attention even where FlashAttention's variable-length kernel runs (the comparison)."""
    return _sampler_choice("_varlen_kernel", (lambda device, dtype: None) if layout == "padded" else None)


def sampler_choice(sampler: str):
    """`auto`: the sampler's own choice (the fused sampling kernel where it runs); `torch`: each step's sampling in
    torch ops (`sample_next`) even where the kernel runs (the comparison)."""
    return _sampler_choice("_fused_sampler", (lambda device: False) if sampler == "torch" else None)


def run_naive(model, ids, pix, grid, k, new_tokens, n_batches, batch=16):
    import torch

    tokens, t0 = 0, time.perf_counter()
    for b in range(n_batches):
        enc = batch_inputs(ids, pix, grid, b * batch, batch, DEVICE)
        with torch.inference_mode():
            out = model.generate(
                **enc,
                do_sample=True,
                temperature=0.7,
                top_p=0.9,
                num_return_sequences=k,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                suppress_tokens=SUPPRESS,
            )
        tokens += (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]
    _sync()
    return tokens, time.perf_counter() - t0


def run_shared(model, ids, pix, grid, k, new_tokens, n_prompts, batch, greedy_row=False, profile=False,
               cuda_graph=False):
    import torch

    from components.common.sampling import shared_prefix_generate

    gen = torch.Generator(device=DEVICE).manual_seed(0)
    tokens, prefill, decode, stats_all = 0, 0.0, 0.0, []
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for start in range(0, n_prompts, batch):
        enc = batch_inputs(ids, pix, grid, start, min(batch, n_prompts - start), DEVICE)
        stats: dict = {}
        out = shared_prefix_generate(
            model, enc, n=k, greedy_row=greedy_row, max_new_tokens=new_tokens, temperature=0.7, top_p=0.9,
            eos_ids=(), pad_id=151643, suppress_ids=SUPPRESS, image_token_id=151655, generator=gen, stats=stats, profile=profile, cuda_graph=cuda_graph,
        )
        tokens += out.numel()
        prefill += stats["prefill_s"]
        decode += stats["decode_s"]
        stats_all.append(stats)
    _sync()
    peak = torch.cuda.max_memory_allocated() if DEVICE == "cuda" else 0
    return tokens, time.perf_counter() - t0, prefill, decode, stats_all, peak


def check_greedy(model, ids, pix, grid, new_tokens):
    """Greedy row of the shared-prefix sampler against `generate(do_sample=False)` on 2 prompts."""
    import torch

    from components.common.sampling import shared_prefix_generate

    enc = batch_inputs(ids, pix, grid, 0, 2, DEVICE)
    with torch.inference_mode():
        ref = model.generate(**enc, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             suppress_tokens=SUPPRESS)[:, enc["input_ids"].shape[1] :]
    ours = shared_prefix_generate(model, enc, n=3, greedy_row=True, max_new_tokens=new_tokens, eos_ids=(),
                                  pad_id=151643, suppress_ids=SUPPRESS, image_token_id=151655,
                                  generator=torch.Generator(device=DEVICE).manual_seed(0))[:, 0]
    try:
        graphed = shared_prefix_generate(model, enc, n=3, greedy_row=True, max_new_tokens=new_tokens, eos_ids=(),
                                         pad_id=151643, suppress_ids=SUPPRESS, image_token_id=151655, cuda_graph=True,
                                         generator=torch.Generator(device=DEVICE).manual_seed(0))[:, 0]
    except Exception as e:  # report and go on with the eager sampler
        print(f"CUDA-graph decode failed: {type(e).__name__}: {e}", flush=True)
        graphed = torch.full_like(ours, -1)
    same = (ref == ours).float()
    first_diff = [int((~(ref[i] == ours[i])).nonzero()[0]) if (ref[i] != ours[i]).any() else new_tokens for i in range(2)]
    return float(same.mean()), first_diff, float((graphed == ours).float().mean())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, default=256)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--prompt-len", type=int, default=320)
    p.add_argument("--naive-batches", type=int, default=2, help="batches of 16 prompts for the naive baseline")
    p.add_argument("--batches", default="16,64", help="prompts per prefill batch for the shared-prefix sampler; "
                   "a trailing g (64g) decodes with CUDA graphs")
    p.add_argument("--quick", action="store_true", help="4-layer model, short run: correctness and smoke speed")
    p.add_argument("--json", default="", help="also write the figures to this JSON file")
    p.add_argument("--profile-rows", type=int, default=0, help="first time the parts of a decode step at this many rows")
    p.add_argument("--kernel-profile", type=int, default=0, help="first profile the decode of this many prompts x "
                   "(k + 1) rows: device ms per step by kind of kernel (GEMM, attention, ...), eager and CUDA graphs")
    p.add_argument("--kernel-profile-steps", type=int, default=32, help="new tokens the profiled decode runs (the "
                   "diagnosis decodes 256: the attention's share grows with the suffix)")
    p.add_argument("--kernel-profile-modes", default="eager,graphs", help="comma-separated: eager and/or graphs")
    p.add_argument("--attention-parts", type=int, default=0, help="first time the decode attention's parts (prompt, "
                   "new tokens, merge) at this many prompts x (k + 1) rows, at several new-token counts")
    p.add_argument("--attention-only", action="store_true", help="with --attention-parts: only that (no model)")
    p.add_argument("--skip-naive", action="store_true", help="skip the naive baseline (profiling runs only)")
    p.add_argument("--decode-layouts", default="auto", help="comma-separated decode-cache layouts to run the kernel "
                   "profile and the shared-prefix batches with: auto (packed + FlashAttention where the GPU runs it) "
                   "and/or padded (batched-matmul cascade attention)")
    p.add_argument("--liger", action="store_true", help="Liger's fused RMSNorm / SwiGLU / rotary kernels in the model "
                   "(liger_kernels: true; needs liger-kernel)")
    p.add_argument("--samplers", default="auto", help="comma-separated per-step samplers: auto (the fused sampling "
                   "kernel where it runs) and/or torch (torch ops, `sample_next`)")
    a = p.parse_args(argv)
    layouts = a.decode_layouts.split(",")
    if set(layouts) - {"auto", "padded"}:
        raise SystemExit(f"--decode-layouts: {a.decode_layouts!r}; choose from auto, padded")
    samplers = a.samplers.split(",")
    if set(samplers) - {"auto", "torch"}:
        raise SystemExit(f"--samplers: {a.samplers!r}; choose from auto, torch")
    variants = [(lay, smp) for lay in layouts for smp in samplers]

    import torch

    if a.quick:
        a.questions, a.new_tokens, a.naive_batches, a.batches = 64, 64, 1, "16,64"
    name = torch.cuda.get_device_name()
    print(f"device: {name}; torch {torch.__version__}", flush=True)
    import transformers

    print(f"transformers {transformers.__version__}", flush=True)
    if a.attention_only:
        import types

        tc = types.SimpleNamespace(**QWEN25_VL_7B["text_config"])
        res = attention_parts(tc, a.attention_parts, a.k, a.prompt_len, a.new_tokens)
        print("decode attention parts (CUDA events, ms per step over all layers): " + json.dumps(res), flush=True)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(res, f, indent=1)
        return 0
    bw = measure_bandwidth()
    nominal = next((v for key, v in NOMINAL_BW.items() if key in name), None)
    peak_flops = next((v for key, v in NOMINAL_BF16_FLOPS.items() if key in name), None)
    print(f"measured copy bandwidth {bw / 1e12:.2f} TB/s; nominal {nominal and nominal / 1e12} TB/s", flush=True)
    t = time.perf_counter()
    model = build_model(small=a.quick)
    if a.liger:
        from components.common.modeling import apply_liger_kernels

        apply_liger_kernels(model)
    print(f"model built in {time.perf_counter() - t:.1f}s, {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params", flush=True)
    ids, pix, grid = make_prompts(a.questions, a.prompt_len)
    res: dict = {"device": name, "torch": torch.__version__, "transformers": transformers.__version__,
                 "workload": dict(questions=a.questions, k=a.k, new_tokens=a.new_tokens, prompt_len=a.prompt_len),
                 "bandwidth_measured": bw, "bandwidth_nominal": nominal, "liger_kernels": a.liger}

    match, first_diff, graph_match = check_greedy(model, ids, pix, grid, 32)
    print(f"greedy row vs generate(do_sample=False), 32 tokens x 2 prompts: {match:.2%} equal, first diff at {first_diff}; "
          f"CUDA-graph greedy row vs eager greedy row: {graph_match:.2%} equal", flush=True)
    res["greedy_match"] = {"fraction": match, "first_diff": first_diff, "cuda_graph_vs_eager": graph_match}

    # warm-up (kernels, allocator) on a small slice, not timed
    run_shared(model, ids, pix, grid, 2, 4, 2, 2)
    if any(x.endswith("g") for x in a.batches.split(",")):
        try:
            run_shared(model, ids, pix, grid, 2, 4, 2, 2, cuda_graph=True)
        except Exception as e:
            print(f"CUDA-graph warm-up failed: {type(e).__name__}: {e}", flush=True)
    if a.profile_rows:
        res["profile"] = profile_parts(model, a.profile_rows, a.prompt_len, a.new_tokens)
        print("decode-step parts (CUDA events, ms): " + json.dumps(res["profile"]), flush=True)
        torch.cuda.empty_cache()
    if a.attention_parts:
        res["attention_parts"] = attention_parts(model.config.text_config, a.attention_parts, a.k, a.prompt_len, a.new_tokens)
        print("decode attention parts (CUDA events, ms per step over all layers): " + json.dumps(res["attention_parts"]),
              flush=True)
        torch.cuda.empty_cache()
    for layout, sampler in variants:
        if a.kernel_profile:
            with decode_layout(layout), sampler_choice(sampler):
                kp = kernel_profile(model, ids, pix, grid, a.k, a.kernel_profile, a.kernel_profile_steps,
                                    tuple(a.kernel_profile_modes.split(",")))
            name = layout if sampler == "auto" else f"{layout}, {sampler} sampling"
            res.setdefault("kernel_profile", {})[name] = kp
            print(f"decode step ({name}), device ms by kind of kernel: " + json.dumps(kp), flush=True)
            torch.cuda.empty_cache()
    if a.skip_naive:
        res["naive"] = {"tok_s": float("nan")}
    else:
        tok, dt = run_naive(model, ids, pix, grid, a.k, a.new_tokens, a.naive_batches)
        res["naive"] = {"tokens": tok, "seconds": dt, "tok_s": tok / dt, "prompts": 16 * a.naive_batches}
        print(f"naive generate(num_return_sequences={a.k}), 16-prompt batches x{a.naive_batches}: {tok} tokens "
              f"{dt:.1f}s -> {tok / dt:,.0f} tok/s", flush=True)
    torch.cuda.empty_cache()

    res["shared"] = []
    for (layout, sampler), spec in ((v, spec) for v in variants for spec in a.batches.split(",")):
        graphs = spec.endswith("g")
        b = int(spec.rstrip("g"))
        free = torch.cuda.mem_get_info()[0]
        tc = model.config.text_config
        kv_need = b * a.k * (a.prompt_len + a.new_tokens) * tc.num_hidden_layers * 2 * tc.num_key_value_heads * 128 * 2
        if kv_need > 0.8 * free:
            print(f"shared-prefix, {spec} prompts/batch: skipped (KV cache {kv_need / 2**30:.1f} GiB > 80% of free {free / 2**30:.1f} GiB)")
            continue
        try:
            with decode_layout(layout), sampler_choice(sampler):
                tok, dt, pre, dec, stats, peak = run_shared(model, ids, pix, grid, a.k, a.new_tokens, a.questions, b,
                                                            profile=True, cuda_graph=graphs)
        except Exception as e:
            print(f"shared-prefix, {spec} prompts/batch: failed: {type(e).__name__}: {e}", flush=True)
            torch.cuda.empty_cache()
            continue
        rows = b * a.k
        w, kv = decode_bytes(model, rows, a.prompt_len, a.new_tokens, prompts=b)
        n_batches = len(stats)
        n_steps = n_batches * (a.new_tokens - 1)
        bytes_total = n_batches * ((a.new_tokens - 1) * w + kv)
        bound = bytes_total / bw
        flops = n_batches * decode_flops(model, rows, a.prompt_len, a.new_tokens)
        compute_bound = flops / peak_flops if peak_flops else 0.0
        roofline = max(bound, compute_bound)
        r = {"prompts_per_batch": b, "cuda_graph": graphs, "layout": layout, "sampler": sampler, "rows": rows, "tokens": tok, "seconds": dt, "tok_s": tok / dt,
             "prefill_s": pre, "decode_s": dec, "ms_per_step": 1e3 * dec / (n_batches * (a.new_tokens - 1)),
             "bound_s_measured_bw": bound, "fraction_of_bound": bound / dec,
             "fraction_of_nominal_bound": (bytes_total / nominal) / dec if nominal else None,
             "speedup_vs_naive": (tok / dt) / res["naive"]["tok_s"], "peak_mem_gib": peak / 2**30,
             "bound_ms_per_step_bandwidth": 1e3 * bound / n_steps, "bound_ms_per_step_compute": 1e3 * compute_bound / n_steps,
             "fraction_of_roofline_bound": roofline / dec,
             "forward_ms_per_step": 1e3 * sum(s["forward_s"] for s in stats) / n_steps,
             "sample_ms_per_step": 1e3 * sum(s["sample_s"] for s in stats) / (n_steps + n_batches)}
        res["shared"].append(r)
        print(f"shared-prefix ({layout} layout, {sampler} sampling){' + CUDA graphs' if graphs else ''}, {b} prompts x {a.k} = {rows} rows/batch: {tok} tokens {dt:.1f}s -> {tok / dt:,.0f} tok/s "
              f"({r['speedup_vs_naive']:.2f}x naive); prefill {pre:.1f}s decode {dec:.1f}s, {r['ms_per_step']:.1f} ms/step; "
              f"bandwidth bound {bound:.1f}s = {r['fraction_of_bound']:.0%} of bound (measured BW)"
              + (f", {r['fraction_of_nominal_bound']:.0%} (nominal)" if nominal else "")
              + f"; peak mem {peak / 2**30:.1f} GiB", flush=True)
        print(f"  per step: forward {r['forward_ms_per_step']:.1f} ms + sampling {r['sample_ms_per_step']:.1f} ms; "
              f"bounds: bandwidth {r['bound_ms_per_step_bandwidth']:.1f} ms, compute {r['bound_ms_per_step_compute']:.1f} ms "
              f"-> {r['fraction_of_roofline_bound']:.0%} of the roofline bound", flush=True)
        torch.cuda.empty_cache()
    print(json.dumps(res, indent=1, default=str))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
