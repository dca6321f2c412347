"""Vision-probe feature extraction speed: a Qwen2.5-VL-7B-shaped vision tower (random weights) at 224 px.

    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 benchmarks/probe.py --json-out /tmp/probe_bench.json

Compares, in the same run and on the same random inputs:
  baseline  the stock Hugging Face tower call (bf16, sdpa, batch 64): attention is split per window / image chunk;
  fast      components.probe.fast_tower: dense batched attention over (images x windows) and (images), grid-wide
            rotary / window plan computed once, same weights; eager and torch.compile'd.
and prints images/s, analytic FLOPs per image, achieved TFLOP/s, fraction of the bf16 dense peak, and the largest
difference between the pooled features of the two paths. Needs a CUDA GPU; `--device cpu --small` runs a tiny
version of the same code path on CPU as a smoke test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from benchmarks.qwen25vl_7b import QWEN25_VL_7B

QWEN25VL_7B_VISION = dict(QWEN25_VL_7B["vision_config"])
SMALL_VISION = dict(QWEN25VL_7B_VISION, depth=4, hidden_size=64, intermediate_size=96, num_heads=4, out_hidden_size=48,
                    fullatt_block_indexes=[1, 3])
BF16_DENSE_PEAK_TFLOPS = 989.0  # H100 SXM / H200 datasheet, dense bf16 (no sparsity)


def tower_flops_per_image(v: dict, image_size: int) -> dict[str, float]:
    """Multiply-adds x 2 of one image's forward, counted from the shapes (elementwise work left out)."""
    g = image_size // v["patch_size"]
    S = g * g  # patches
    D, I, depth = v["hidden_size"], v["intermediate_size"], v["depth"]
    m = v["spatial_merge_size"]
    patch_in = v["in_channels"] * v["temporal_patch_size"] * v["patch_size"] ** 2
    vws = v["window_size"] // m // v["patch_size"]
    win_tokens = min(vws, g // m) ** 2 * m * m  # patches per window (equal windows at 224 px)
    n_full = len(v["fullatt_block_indexes"])
    patch_embed = 2 * S * patch_in * D
    linear = 2 * S * (3 * D * D + D * D + 3 * D * I)  # qkv, proj, gate/up/down
    attn_win = 2 * 2 * S * win_tokens * D  # QK^T and PV, each token attends within its window
    attn_full = 2 * 2 * S * S * D
    blocks = depth * linear + (depth - n_full) * attn_win + n_full * attn_full
    merged = S // (m * m)
    hm = D * m * m
    merger = 2 * merged * (hm * hm + hm * v["out_hidden_size"])
    return {"patch_embed": patch_embed, "blocks": blocks, "merger": merger, "total": patch_embed + blocks + merger}


def time_preprocessing(image_size: int, workers: list[int], n: int, batch: int = 64) -> list[dict]:
    """Images/s of the pipeline's CPU side (PIL resize + the Qwen2-VL image processor, as in
    components.probe.features), through a DataLoader with `w` worker processes."""
    import numpy as np
    from torch.utils.data import DataLoader
    from transformers import Qwen2VLImageProcessorPil

    from components.probe.features import _Batches

    ip = Qwen2VLImageProcessorPil(patch_size=14, merge_size=2)  # Qwen2.5-VL-7B's preprocessor settings
    imgs = np.random.default_rng(0).integers(0, 255, size=(n, 28, 28), dtype=np.uint8)
    rows = []
    for w in workers:
        loader = DataLoader(_Batches(imgs, batch, ip, image_size), batch_size=None, num_workers=w)
        t0 = time.perf_counter()
        count = sum(int(thw.shape[0]) for _, thw in loader)
        rows.append({"workers": w, "images_per_s": count / (time.perf_counter() - t0)})
        print(f"preprocess {image_size}px, {w:2d} workers: {rows[-1]['images_per_s']:8.1f} img/s", flush=True)
    return rows


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-size", type=int, default=224, help="square image side in pixels (multiple of 28)")
    p.add_argument("--baseline-batch", type=int, default=64, help="images per call of the stock HF tower")
    p.add_argument("--fast-batches", default="64,256,512", help="comma-separated batch sizes for the fast path")
    p.add_argument("--compile-batches", default="256", help="comma-separated batch sizes for the torch.compile'd fast path ('' to skip)")
    p.add_argument("--preprocess-workers", default="", help="also time the image processor (28 px grey -> image size) with these "
                   "DataLoader worker counts, e.g. 0,8,16 (CPU side of the pipeline)")
    p.add_argument("--preprocess-images", type=int, default=2048, help="images per preprocessing measurement")
    p.add_argument("--iters", type=int, default=8, help="timed calls per variant (median reported)")
    p.add_argument("--device", default="cuda", help="cuda or cpu")
    p.add_argument("--small", action="store_true", help="tiny tower (CPU smoke test of the benchmark itself)")
    p.add_argument("--json-out", default=None, help="write all figures here as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    import torch
    from transformers import Qwen2_5_VLConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    from components.probe.fast_tower import fast_pooled_features, hf_pooled_features, make_plan

    args = make_parser().parse_args(argv)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    vcfg_d = SMALL_VISION if args.small else QWEN25VL_7B_VISION
    torch.manual_seed(0)
    vcfg = Qwen2_5_VLConfig(vision_config=vcfg_d).vision_config
    with torch.device(dev):
        visual = Qwen2_5_VisionTransformerPretrainedModel._from_config(vcfg, attn_implementation="sdpa")
    visual = visual.to(dtype).eval()
    n_params = sum(p.numel() for p in visual.parameters())
    g = args.image_size // vcfg_d["patch_size"]
    patch_dim = 3 * vcfg_d["temporal_patch_size"] * vcfg_d["patch_size"] ** 2
    plan = make_plan(visual, g, g, device=dev)
    assert plan is not None, "fast path does not apply to this grid"
    flops = tower_flops_per_image(vcfg_d, args.image_size)
    info = {
        "device": torch.cuda.get_device_name(dev) if cuda else "cpu",
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "vision_config": vcfg_d,
        "params": n_params,
        "image_size": args.image_size,
        "flops_per_image": flops,
    }
    print(json.dumps({k: v for k, v in info.items() if k != "vision_config"}, indent=1))

    def inputs(b: int, seed: int):
        gen = torch.Generator(device=dev).manual_seed(seed)
        px = torch.randn(b * g * g, patch_dim, generator=gen, device=dev, dtype=dtype)
        thw = torch.tensor([[1, g, g]] * b, device=dev)
        return px, thw

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def bench(fn, b: int, iters: int, warmup: int = 2) -> float:
        sets = [inputs(b, 100 + i) for i in range(3)]  # rotate input sets: no cache-resident repeats
        with torch.inference_mode():
            for i in range(warmup):
                fn(*sets[i % 3])
            sync()
            times = []
            for i in range(iters):
                t0 = time.perf_counter()
                fn(*sets[i % 3])
                sync()
                times.append(time.perf_counter() - t0)
        return b / statistics.median(times)

    results = []

    def record(name: str, b: int, ips: float):
        tflops = ips * flops["total"] / 1e12
        row = {"variant": name, "batch": b, "images_per_s": ips, "tflops": tflops,
               "peak_fraction": tflops / BF16_DENSE_PEAK_TFLOPS if cuda else None}
        results.append(row)
        print(f"{name:>16} batch {b:4d}: {ips:9.1f} img/s  {tflops:7.1f} TFLOP/s", flush=True)

    # Matmul ceiling as measured on this card (context for the peak fraction).
    if cuda and not args.small:
        a = torch.randn(8192, 8192, device=dev, dtype=dtype)
        bm = torch.randn(8192, 8192, device=dev, dtype=dtype)
        for _ in range(3):
            a @ bm
        sync()
        t0 = time.perf_counter()
        for _ in range(20):
            a @ bm
        sync()
        info["matmul_8192_tflops"] = 20 * 2 * 8192**3 / (time.perf_counter() - t0) / 1e12
        print(f"bf16 8192^3 matmul: {info['matmul_8192_tflops']:.0f} TFLOP/s", flush=True)
        del a, bm

    # Correctness: same inputs through both paths.
    with torch.inference_mode():
        px, thw = inputs(8, 7)
        ref = hf_pooled_features(visual, px, thw, "mean").float()
        got = fast_pooled_features(visual, px, plan, "mean").float()
        err = (got - ref).abs().max().item()
        rel = ((got - ref).norm() / ref.norm()).item()
    info["max_abs_diff"], info["rel_l2_diff"], info["ref_max_abs"] = err, rel, ref.abs().max().item()
    print(f"fast vs HF pooled features: max |diff| {err:.3e} (max |ref| {info['ref_max_abs']:.3e}), rel L2 {rel:.3e}")

    record("baseline_hf", args.baseline_batch,
           bench(lambda p, t: hf_pooled_features(visual, p, t, "mean"), args.baseline_batch, max(3, args.iters // 2)))
    for b in [int(x) for x in args.fast_batches.split(",") if x]:
        record("fast_eager", b, bench(lambda p, t: fast_pooled_features(visual, p, plan, "mean"), b, args.iters))
    for cb in [int(x) for x in args.compile_batches.split(",") if x]:
        try:
            t0 = time.perf_counter()
            with torch.inference_mode():
                p, _ = inputs(cb, 1)
                c_out = fast_pooled_features(visual, p, plan, "mean", compile=True)
                e_out = fast_pooled_features(visual, p, plan, "mean")
                rel_c = ((c_out.float() - e_out.float()).norm() / e_out.float().norm()).item()
            sync()
            info[f"compile_seconds_b{cb}"] = time.perf_counter() - t0
            info[f"compile_vs_eager_rel_l2_b{cb}"] = rel_c
            print(f"torch.compile warm-up (batch {cb}) {info[f'compile_seconds_b{cb}']:.1f} s; rel L2 vs eager {rel_c:.3e}",
                  flush=True)
            record("fast_compiled", cb,
                   bench(lambda p, t: fast_pooled_features(visual, p, plan, "mean", compile=True), cb, args.iters))
        except Exception as e:  # report, keep the eager figures
            info["compile_error"] = f"{type(e).__name__}: {e}"[:500]
            print("torch.compile failed:", info["compile_error"])
    if args.preprocess_workers:
        info["preprocess"] = time_preprocessing(args.image_size, [int(w) for w in args.preprocess_workers.split(",")],
                                                args.preprocess_images)

    base = results[0]["images_per_s"]
    best = max(results[1:], key=lambda r: r["images_per_s"])
    info["speedup_best_vs_baseline"] = best["images_per_s"] / base
    info["results"] = results
    print("\n| variant | batch | images/s | TFLOP/s | of bf16 dense peak | vs baseline |")
    print("|---|---|---|---|---|---|")
    for r in results:
        frac = f"{100 * r['peak_fraction']:.1f}%" if r["peak_fraction"] is not None else "-"
        print(f"| {r['variant']} | {r['batch']} | {r['images_per_s']:.1f} | {r['tflops']:.1f} | {frac} | "
              f"{r['images_per_s'] / base:.2f}x |")
    print(f"\nGFLOP per image: {flops['total'] / 1e9:.1f}; best speed-up {info['speedup_best_vs_baseline']:.2f}x; "
          f"max |diff| {err:.3e}; device {info['device']}")
    ok = rel < (3e-2 if cuda else 1e-5)
    print("correctness:", "PASS" if ok else "FAIL")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(info, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
