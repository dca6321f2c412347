"""Modality-labeller throughput: a Qwen2.5-VL-32B-shaped model (random weights) labelling PMC-VQA-like questions
through the real code path (`components.curate.labeller.label_modalities`), stock and fast side by side.

    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 benchmarks/labeller.py --json-out /tmp/labeller_bench.json
    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 benchmarks/labeller.py --compile --questions 256 --baseline-questions 64
    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 benchmarks/labeller.py --liger --json-out /tmp/labeller_liger.json
    PYTHONPATH=. python3 benchmarks/labeller.py --device cpu --small        # tiny model on CPU: a smoke test

Model: Qwen/Qwen2.5-VL-32B-Instruct's config (benchmarks/qwen25vl_32b.py: 64 layers, hidden 5120, 40/8 heads,
MLP 27648, the full 152,064-token vocabulary; vision tower depth 32, hidden 1280), random weights, bf16, sdpa,
built directly on the GPU. Tokenizer: a byte-level BPE trained here on the prompt and the question vocabulary, so
that text costs about what Qwen's tokenizer makes of it (~1 token per word); the special-token ids are its own.
Image processor: Qwen2.5-VL's (patch 14, merge 2) with the labeller's cap of 512 image tokens (512·28² pixels).

Data: `--questions` synthetic PMC-VQA-like questions written as JPEG figures + records. Figure sizes spread like
journal figures (long side log-normal around 512 px, 160-2000 px; aspect ratio 1:2 to 2:1), so prompts range from
~150 to ~640 tokens; question lengths spread from 4 to ~40 words. The distribution is an assumption, printed with
the results (prompt and image-token quantiles).

Runs, each on a fresh label cache, after a warm-up on other questions of the same distribution:
  baseline  the stock path (`fast=False`): batches of `--baseline-batch` questions in record order, prompt forward,
            KV cache repeated for the 8 candidates, candidate forward, transformers' per-window vision attention;
            on the first `--baseline-questions`;
  fast      length-sorted batches of `--token-budget` tokens, preprocessing threads working ahead of the GPU,
            prompts and candidates in one forward (`components.curate.scoring`), one attention call per vision
            layer (`components.common.vision_attention`, as every model the steps load); on all `--questions`;
  compiled  the fast path with torch.compile'd vision block and decoder layer (`--compile`);
  liger     the fast path with Liger's RMSNorm / SiLU-mul / rotary kernels (`--liger`: liger_kernels=True; needs the
            liger-kernel package and CUDA, refused before the model is built otherwise).
Printed per run: questions/s, prompt tokens/s, analytic FLOPs (components.curate.scoring.vision_flops/text_flops:
2 x multiply-adds from the shapes, causal attention pairs only, padding excluded), achieved TFLOP/s of the prompt
pass (GPU time by CUDA events: the fast path's one forward, the baseline's first forward) and end to end (wall
time), each as a fraction of the bf16 dense datasheet peak (989 TFLOP/s) and of an 8192³ bf16 matmul measured in
the same run, peak GPU memory; then how far the fast path's scores are from the baseline's on the same questions
(bf16: near-ties of a random model may flip), and one summary line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.qwen25vl_32b import QWEN25_VL_32B

BF16_DENSE_PEAK_TFLOPS = 989.0  # H100 SXM / H200 datasheet, dense bf16 (no sparsity)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
           "<|video_pad|>"]
SMALL = dict(
    text_config=dict(QWEN25_VL_32B["text_config"], hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2,
                     rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]}),
    vision_config=dict(QWEN25_VL_32B["vision_config"], depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                       out_hidden_size=64, fullatt_block_indexes=[1]),
)
WORDS_TEXT = (
    "what which how where is are does the this that of in on at to with from by for a an image figure panel arrow "
    "shows shown indicate indicates visible finding findings lesion mass nodule tumor cyst fracture opacity "
    "effusion edema hemorrhage infarct stenosis calcification enhancement signal intensity density uptake "
    "abnormality structure organ tissue cell cells nucleus nuclei staining stained section slide magnification "
    "scale bar left right upper lower anterior posterior axial coronal sagittal view plane patient year old male "
    "female showing demonstrating suggests consistent diagnosis likely most primary main imaging technique "
    "modality used scan examination performed contrast enhanced weighted sequence brain chest abdomen liver "
    "kidney lung heart spine knee breast thyroid pancreas colon bone skin retina eye vessel artery vein "
    "ultrasound CT MRI X-ray radiograph microscopy histology dermatology dermoscopy OCT PET angiography "
    "endoscopy photograph after before treatment follow up months weeks days arrowhead asterisk circle region "
    "area between within around adjacent diffuse focal multiple single small large irregular round well defined"
)
WORDS = WORDS_TEXT.split()


def train_tokenizer(vocab_size: int):
    """A byte-level BPE trained on the labeller prompt and the benchmark's question vocabulary, with the Qwen
    special tokens and chat template: text then costs about what Qwen's tokenizer makes of it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    from components.common.tiny_model import CHAT_TEMPLATE
    from components.curate.labeller import PROMPT

    corpus = [PROMPT, "You are a helpful assistant.", " ".join(WORDS), " ".join(w.capitalize() for w in WORDS),
              "MRI CT ultrasound X-ray microscopy dermatology OCT none"] * 50
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                         show_progress=False))
    tok = Qwen2TokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None)
    tok.add_special_tokens({"additional_special_tokens": SPECIAL[1:]})
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"  # as components.common.modeling.load_processor: the stock path needs it
    return tok


def make_processor(tokenizer, small: bool):
    from transformers import Qwen2VLImageProcessorPil

    from components.common.modeling import ImageQwenVLProcessor

    pixels = (56 * 56, 168 * 168) if small else (56 * 56, 512 * 28 * 28)  # the labeller's cap: 512 image tokens
    ip = Qwen2VLImageProcessorPil(min_pixels=pixels[0], max_pixels=pixels[1], patch_size=14, merge_size=2,
                                  temporal_patch_size=2)
    return ImageQwenVLProcessor(image_processor=ip, tokenizer=tokenizer, chat_template=tokenizer.chat_template)


def model_config(tokenizer, small: bool) -> dict:
    cfg = json.loads(json.dumps(SMALL if small else QWEN25_VL_32B))
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL}
    if small:
        cfg["text_config"]["vocab_size"] = len(tokenizer)
    cfg["text_config"].update(bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                              pad_token_id=ids["<|endoftext|>"])
    cfg.update(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
               vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
               tie_word_embeddings=False)
    return cfg


def build_model(cfg: dict, device: str):
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(Qwen2_5_VLConfig(**cfg), dtype=dtype,
                                                                attn_implementation="sdpa")
    return model.eval().requires_grad_(False)


def write_questions(root: Path, n: int, seed: int, small: bool, prefix: str = "q"):
    """`n` PMC-VQA-like records with JPEG figures of a spread of sizes (see the module docstring)."""
    import numpy as np
    from PIL import Image

    from components.common.records import MCQRecord

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        if small:
            long_side = int(rng.integers(40, 300))
        else:
            long_side = int(np.clip(rng.lognormal(np.log(512), 0.5), 160, 2000))
        aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        w, h = (long_side, max(16, int(long_side / aspect))) if aspect >= 1 else (max(16, int(long_side * aspect)), long_side)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = 128 + 60 * np.sin(xx / (7 + 13 * rng.random())) * np.cos(yy / (5 + 11 * rng.random()))
        img = np.clip(base[..., None] + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        rel = f"images/{prefix}{i:05d}.jpg"
        Image.fromarray(img).save(root / rel, format="JPEG", quality=90)
        words = int(np.clip(3 + rng.lognormal(np.log(8), 0.5), 4, 60))
        question = " ".join(rng.choice(WORDS, size=words)).capitalize() + "?"
        records.append(MCQRecord(id=f"{prefix}{i:05d}", question=question, options=["MRI", "CT", "X-ray", "OCT"],
                                 answer="A", image=rel, task="pmc-vqa"))
    return records


def matmul_tflops(device: str) -> float:
    import torch

    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(20):
        a @ b
    torch.cuda.synchronize()
    return 20 * 2 * 8192**3 / (time.perf_counter() - t0) / 1e12


def question_flops(cfg: dict, length: int, grid: tuple[int, int, int], cand_lens: list[int]) -> dict[str, float]:
    """Useful FLOPs of one question: its prompt (vision tower + decoder) and its candidates (+ their LM-head rows)."""
    from components.curate.scoring import text_flops, vision_flops

    prompt = vision_flops(cfg["vision_config"], grid[1], grid[2]) + text_flops(cfg["text_config"], length)
    cands = text_flops(cfg["text_config"], length, cand_lens, logits=sum(cand_lens)) - text_flops(cfg["text_config"], length)
    return {"prompt": prompt, "candidates": cands}


def run(name: str, labeller, records, root: Path, cfg: dict, cand_lens: list[int], device: str, **kw) -> dict:
    import torch

    from components.curate.labeller import LabelCache, label_modalities

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    labeller.profile = {}
    stats: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        labels = label_modalities(records, root, labeller, LabelCache(Path(tmp) / "labels.jsonl"), stats=stats, **kw)
    prof = labeller.profile
    labeller.profile = None
    flops = [question_flops(cfg, n, g, cand_lens) for n, g in zip(prof["prompt_lengths"], prof["grids"])]
    prompt_f = sum(f["prompt"] for f in flops)
    cand_f = sum(f["candidates"] for f in flops)
    n, wall = len(records), stats["wall_s"]
    pass_f = prompt_f + (cand_f if kw.get("fast", True) else 0.0)  # the fast path's one forward scores both
    row = {
        "variant": name, "liger_kernels": labeller.liger_kernels, "questions": n, "wall_s": wall,
        "questions_per_s": n / wall,
        "prompt_tokens": sum(prof["prompt_lengths"]), "prompt_tokens_per_s": sum(prof["prompt_lengths"]) / wall,
        "batches": stats["batches"], "prompt_flops": prompt_f, "candidate_flops": cand_f,
        "prompt_pass_s": prof["prompt_pass_s"], "candidate_pass_s": prof.get("candidate_pass_s", 0.0),
        "prompt_pass_tflops": pass_f / prof["prompt_pass_s"] / 1e12,
        "end_to_end_tflops": (prompt_f + cand_f) / wall / 1e12,
        "prepare_wait_s": stats["prepare_wait_s"], "write_s": stats["write_s"], "workers": stats.get("workers", 0),
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "labels": {k: (e.label, e.scores) for k, e in labels.items()},
    }
    print(f"{name:>9}: {n} questions in {wall:6.1f} s = {row['questions_per_s']:6.2f} q/s, "
          f"{row['prompt_tokens_per_s']:8.0f} prompt tok/s; prompt pass {row['prompt_pass_s']:6.1f} s = "
          f"{row['prompt_pass_tflops']:6.1f} TFLOP/s; end to end {row['end_to_end_tflops']:6.1f} TFLOP/s; "
          f"{row['batches']} batches; waited for data {row['prepare_wait_s']:.2f} s"
          + (f"; peak {row['peak_mem_gib']:.1f} GiB" if cuda else "")
          + ("; Liger's kernels" if row["liger_kernels"] else ""), flush=True)
    return row


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, default=384, help="questions the fast path labels")
    p.add_argument("--baseline-questions", type=int, default=96, help="the first this many are labelled by the stock path too")
    p.add_argument("--baseline-batch", type=int, default=8, help="stock path: questions per batch (today's default)")
    p.add_argument("--token-budget", type=int, default=16384, help="fast path: prompt tokens per forward")
    p.add_argument("--workers", type=int, default=-1, help="fast path: preprocessing threads (-1: auto)")
    p.add_argument("--warmup-questions", type=int, default=24, help="questions each path labels before it is timed")
    p.add_argument("--compile", action="store_true", help="also time the fast path with torch.compile")
    p.add_argument("--liger", action="store_true", help="also time the fast path with Liger's RMSNorm / SiLU-mul / "
                   "rotary kernels (liger_kernels=True; needs liger-kernel and CUDA)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda", help="cuda or cpu")
    p.add_argument("--small", action="store_true", help="tiny model and images (CPU smoke test of the benchmark itself)")
    p.add_argument("--json-out", default=None, help="write all figures here as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch

    from components.common.modeling import require_liger
    from components.common.vision_attention import batch_window_attention, per_window_attention
    from components.curate.labeller import ModalityLabeller

    args = make_parser().parse_args(argv)
    cuda = args.device.startswith("cuda")
    require_liger(args.liger, "liger_kernels", on_cuda=cuda)  # refused before the model is built
    t0 = time.perf_counter()
    tok = train_tokenizer(vocab_size=1200 if args.small else 4000)
    proc = make_processor(tok, args.small)
    cfg = model_config(tok, args.small)
    model = build_model(cfg, args.device)
    if cuda:
        torch.cuda.synchronize()
    n_params = sum(p.numel() for p in model.parameters())
    info = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
            "transformers": __import__("transformers").__version__, "params": n_params,
            "build_s": time.perf_counter() - t0}
    print(f"model: {n_params / 1e9:.2f} B params, built in {info['build_s']:.1f} s on {info['device']} "
          f"(torch {info['torch']}, transformers {info['transformers']})", flush=True)
    if cuda:
        info["matmul_8192_tflops"] = matmul_tflops(args.device)
        print(f"bf16 8192^3 matmul: {info['matmul_8192_tflops']:.0f} TFLOP/s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t1 = time.perf_counter()
        records = write_questions(root, args.questions, args.seed, args.small)
        warm = write_questions(root, args.warmup_questions, args.seed + 1, args.small, prefix="w")
        print(f"wrote {len(records) + len(warm)} figures in {time.perf_counter() - t1:.1f} s", flush=True)
        lab = ModalityLabeller("benchmark-32b-shape", model=model, processor=proc)
        spec = lab.scoring_spec()
        cand_lens = [len(c) for c in spec.cand_ids]
        texts = [lab.prompt_text(r.question) for r in records]
        from PIL import Image

        sizes = []
        for r in records:
            with Image.open(root / r.image) as im:
                sizes.append(im.size)
        lengths = lab.prompt_lengths(texts, sizes)
        unit = 4
        img_tokens = [proc.image_processor.get_number_of_image_patches(h, w, {}) // unit for w, h in sizes]

        def q(xs):
            return [int(np.percentile(xs, p)) for p in (0, 10, 50, 90, 100)]

        info["workload"] = {"prompt_tokens_p0_10_50_90_100": q(lengths), "image_tokens_p0_10_50_90_100": q(img_tokens),
                            "mean_prompt_tokens": float(np.mean(lengths)), "candidate_tokens": cand_lens}
        print(f"prompt tokens (min/p10/median/p90/max): {q(lengths)}, mean {np.mean(lengths):.0f}; image tokens "
              f"{q(img_tokens)}; candidate tokens {cand_lens} (+ end of turn)", flush=True)

        fast_kw = {"fast": True, "token_budget": args.token_budget, "workers": args.workers}
        base_kw = {"fast": False, "batch_size": args.baseline_batch}
        rows = []
        nb = min(args.baseline_questions, len(records))
        runs = [("baseline", base_kw, records[:nb], False, False), ("fast", fast_kw, records, False, False)]
        runs += [("compiled", fast_kw, records, True, False)] if args.compile else []
        runs += [("liger", fast_kw, records, False, True)] if args.liger else []
        for name, kw, recs, compile_, liger in runs:
            lab.compile, lab.liger_kernels = compile_, liger
            # the stock path keeps transformers' per-window vision attention; the fast paths batch the windows
            (per_window_attention if name == "baseline" else batch_window_attention)(model)
            try:
                tw = time.perf_counter()
                run(f"{name}-warm", lab, warm, root, cfg, cand_lens, args.device, **kw)
                info[f"{name}_warmup_s"] = time.perf_counter() - tw
                rows.append(run(name, lab, recs, root, cfg, cand_lens, args.device, **kw))
            except Exception as e:  # report and keep the other figures (e.g. a compile failure)
                if name != "compiled":
                    raise
                info["compile_error"] = f"{type(e).__name__}: {e}"[:500]
                print("compiled run failed:", info["compile_error"], flush=True)

    base, fast = rows[0], rows[1]
    common = [k for k in base["labels"]]
    same = sum(base["labels"][k][0] == fast["labels"][k][0] for k in common)
    diffs = [abs(base["labels"][k][1][c] - fast["labels"][k][1][c]) for k in common for c in base["labels"][k][1]]
    margins = []
    for k in common:
        s = sorted(base["labels"][k][1].values(), reverse=True)
        margins.append(s[0] - s[1])
    info["agreement"] = {"questions": len(common), "same_label": same, "max_abs_score_diff": max(diffs),
                         "median_abs_score_diff": statistics.median(diffs),
                         "median_top2_margin": statistics.median(margins)}
    print(f"fast vs baseline on {len(common)} questions: same label {same}/{len(common)}, |score diff| max "
          f"{max(diffs):.3e} median {statistics.median(diffs):.3e} (median top-2 margin {statistics.median(margins):.3e})")
    liger = next((r for r in rows if r["variant"] == "liger"), None)
    if liger is not None:  # other kernels, other bf16 rounding: how far the scores move
        ld = [abs(fast["labels"][k][1][c] - liger["labels"][k][1][c])
              for k in fast["labels"] for c in fast["labels"][k][1]]
        lsame = sum(fast["labels"][k][0] == liger["labels"][k][0] for k in fast["labels"])
        # a changed label should be a near tie: the fast path's top-2 margin on those questions
        flipped = [sorted(fast["labels"][k][1].values(), reverse=True) for k in fast["labels"]
                   if fast["labels"][k][0] != liger["labels"][k][0]]
        flip_margin = max((s[0] - s[1] for s in flipped), default=0.0)
        info["liger_agreement"] = {"questions": len(fast["labels"]), "same_label": lsame, "max_abs_score_diff": max(ld),
                                   "median_abs_score_diff": statistics.median(ld),
                                   "max_top2_margin_of_changed_labels": flip_margin}
        print(f"liger vs fast on {len(fast['labels'])} questions: same label {lsame}/{len(fast['labels'])}, "
              f"|score diff| max {max(ld):.3e} median {statistics.median(ld):.3e}; changed labels' top-2 margin on "
              f"the fast path at most {flip_margin:.3e}")

    mm = info.get("matmul_8192_tflops")
    print("\n| variant | questions | q/s | prompt tok/s | prompt-pass TFLOP/s | of 989 peak | of measured matmul "
          "| end-to-end TFLOP/s | of 989 peak | peak GPU mem | vs baseline |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        r["pass_peak_frac"] = r["prompt_pass_tflops"] / BF16_DENSE_PEAK_TFLOPS
        r["pass_matmul_frac"] = r["prompt_pass_tflops"] / mm if mm else None
        r["e2e_peak_frac"] = r["end_to_end_tflops"] / BF16_DENSE_PEAK_TFLOPS
        r["speedup"] = r["questions_per_s"] / base["questions_per_s"]
        print(f"| {r['variant']} | {r['questions']} | {r['questions_per_s']:.2f} | {r['prompt_tokens_per_s']:,.0f} | "
              f"{r['prompt_pass_tflops']:.1f} | {100 * r['pass_peak_frac']:.1f}% | "
              + (f"{100 * r['pass_matmul_frac']:.1f}%" if mm else "-")
              + f" | {r['end_to_end_tflops']:.1f} | {100 * r['e2e_peak_frac']:.1f}% | "
              + (f"{r['peak_mem_gib']:.1f} GiB" if cuda else "-") + f" | {r['speedup']:.2f}x |")
    best = max(rows[1:], key=lambda r: r["questions_per_s"])
    gflop_q = (best["prompt_flops"] + best["candidate_flops"]) / best["questions"] / 1e9
    hours = 177_000 / best["questions_per_s"] / 3600
    print(f"\nSUMMARY labeller {info['device']}: {best['variant']} {best['questions_per_s']:.2f} q/s "
          f"({best['speedup']:.2f}x baseline {base['questions_per_s']:.2f} q/s); prompt pass "
          f"{best['prompt_pass_tflops']:.0f} TFLOP/s = {100 * best['pass_peak_frac']:.1f}% of 989"
          + (f" ({100 * best['pass_matmul_frac']:.1f}% of measured {mm:.0f})" if mm else "")
          + f"; end to end {100 * best['e2e_peak_frac']:.1f}% of 989; {gflop_q:,.0f} GFLOP/question; "
          f"PMC-VQA 177k ~ {hours:.1f} GPU-hours; same label {same}/{len(common)}; total {time.perf_counter() - t0:.0f} s")
    if args.json_out:
        for r in rows:
            r.pop("labels")
        with open(args.json_out, "w") as f:
            json.dump({**info, "results": rows}, f, indent=1)
    if not cuda:  # float32 on CPU: the two paths must agree exactly
        return 0 if same == len(common) and max(diffs) < 1e-3 else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
