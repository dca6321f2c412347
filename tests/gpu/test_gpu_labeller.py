"""The labeller's fast path on a CUDA GPU in bf16 (run with `make test-gpu`): it agrees with the stock path, the
torch.compile'd forward agrees with the eager one, and label_modalities runs with preprocessing threads and pinned memory."""

from __future__ import annotations

import pytest


def _images(root, n=12, seed=0):
    import numpy as np
    from PIL import Image

    from components.common.records import MCQRecord

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    recs = []
    for i in range(n):
        w, h = (int(v) for v in rng.integers(30, 400, size=2))
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"{i}.jpg")
        recs.append(MCQRecord(id=f"q{i}", question="What does the figure show" + " in detail" * int(rng.integers(0, 6)) + "?",
                              options=["a", "b"], answer="A", image=f"images/{i}.jpg", task="pmc-vqa"))
    return recs


@pytest.fixture(scope="module")
def cuda_labeller(tiny_model_dir):
    from components.common.modeling import load_model_and_processor, load_processor
    from components.curate.labeller import ModalityLabeller

    model, _ = load_model_and_processor(str(tiny_model_dir), device="cuda")  # bf16
    proc = load_processor(str(tiny_model_dir), min_pixels=56 * 56, max_pixels=168 * 168)  # ragged grids
    return ModalityLabeller(str(tiny_model_dir), model=model, processor=proc)


@pytest.mark.gpu
def test_fast_path_agrees_with_stock_on_gpu_bf16(cuda_labeller, tmp_path):
    from components.curate.labeller import LabelCache, label_modalities

    recs = _images(tmp_path)
    lab = cuda_labeller
    stock = label_modalities(recs, tmp_path, lab, LabelCache(tmp_path / "s.jsonl"), fast=False, batch_size=4)
    stats: dict = {}
    fast = label_modalities(recs, tmp_path, lab, LabelCache(tmp_path / "f.jsonl"), fast=True, token_budget=2048,
                            workers=2, stats=stats)
    assert stats["workers"] == 2 and stats["batches"] > 1 and set(fast) == set(stock)
    for rid, e in stock.items():
        diffs = [abs(e.scores[c] - fast[rid].scores[c]) for c in e.scores]
        assert max(diffs) < 0.1, (rid, diffs)  # bf16, different kernels: small differences
        top = sorted(e.scores.values(), reverse=True)
        if top[0] - top[1] > 0.2:  # a clear winner must not change
            assert fast[rid].label == e.label


@pytest.mark.gpu
def test_compiled_forward_agrees_with_eager_on_gpu(cuda_labeller, tmp_path):
    import torch
    from PIL import Image

    from components.curate import scoring as S

    lab = cuda_labeller
    model, proc = lab._load()
    recs = _images(tmp_path, n=10, seed=1)
    spec = lab.scoring_spec()
    for chunk in (recs[:6], recs[6:]):  # two batch shapes: the dynamic-shape graph serves both
        items = [(Image.open(tmp_path / r.image).convert("RGB"), lab.prompt_text(r.question)) for r in chunk]
        batch = S.to_device(S.prepare_batch(items, proc, spec), "cuda")
        with torch.inference_mode():
            eager = S.score_prepared(model, batch)
            compiled = S.score_prepared(model, batch, compile=True)
        assert torch.isfinite(compiled).all()
        assert (compiled - eager).abs().max().item() < 0.1


@pytest.mark.gpu
def test_labeller_benchmark_runs_on_gpu(tmp_path):
    import json

    from benchmarks.labeller import main

    out = tmp_path / "bench.json"
    assert main(["--device", "cuda", "--small", "--questions", "24", "--baseline-questions", "24",
                 "--warmup-questions", "4", "--compile", "--json-out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [r["variant"] for r in res["results"]] == ["baseline", "fast", "compiled"], res.get("compile_error")
    assert res["matmul_8192_tflops"] > 0
