"""The labeller's fast path on a CUDA GPU in bf16 (run with `make test-gpu`): it agrees with the stock path, the
torch.compile'd forward agrees with the eager one, the forward with Liger's kernels agrees with the plain one (skipped
where liger-kernel is absent), the prompt attention takes the flash kernel with the KV heads unrepeated, and
label_modalities runs with preprocessing threads and pinned memory."""

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


def _batches(lab, root, seed):
    from PIL import Image

    from components.curate import scoring as S

    _, proc = lab._load()
    recs = _images(root, n=10, seed=seed)
    out = []
    for chunk in (recs[:6], recs[6:]):  # two batch shapes
        items = [(Image.open(root / r.image).convert("RGB"), lab.prompt_text(r.question)) for r in chunk]
        out.append(S.to_device(S.prepare_batch(items, proc, lab.scoring_spec()), "cuda"))
    return out


@pytest.mark.gpu
def test_liger_kernels_agree_with_the_plain_forward_on_gpu_bf16(cuda_labeller, tiny_model_dir, tmp_path, monkeypatch):
    """Liger's RMSNorm / SiLU-mul / rotary kernels run in every vision block and decoder layer, and the bf16 scores stay
    as close to a float32 forward as the plain bf16 kernels' (other rounding, same formulas)."""
    pytest.importorskip("liger_kernel")
    import collections
    import types

    import torch

    from components.common.modeling import load_model_and_processor
    from components.curate import scoring as S
    from components.curate.labeller import ModalityLabeller

    lab = cuda_labeller
    model, proc = lab._load()
    ref_model, _ = load_model_and_processor(str(tiny_model_dir), device="cuda", dtype="float32")
    real = S._liger()
    calls: collections.Counter = collections.Counter()

    def counted(name):
        def call(*a, **k):
            calls[name] += 1
            return getattr(real, name)(*a, **k)
        return call

    names = ("liger_rms_norm", "liger_swiglu", "liger_rope")
    monkeypatch.setattr(S, "_liger", lambda: types.SimpleNamespace(**{n: counted(n) for n in names}))
    liger_lab = ModalityLabeller(str(tiny_model_dir), model=model, processor=proc, liger_kernels=True)  # a GPU model
    for batch in _batches(lab, tmp_path, seed=2):
        with torch.inference_mode():
            want = S.score_prepared(ref_model, batch)
            plain = S.score_prepared(model, batch)
            got = S.score_prepared(model, batch, liger_kernels=True)
        assert torch.isfinite(got).all()
        assert (got - plain).abs().max().item() < 0.1
        plain_err, liger_err = (plain - want).abs().mean().item(), (got - want).abs().mean().item()
        assert liger_err <= 1.5 * plain_err + 1e-3, (liger_err, plain_err)
        rows = liger_lab.score_prepared(batch)  # the labeller passes the setting on
        torch.testing.assert_close(torch.tensor([[r[c] for c in lab.candidates] for r in rows]), got.cpu())
    layers, blocks = model.config.text_config.num_hidden_layers, model.config.vision_config.depth
    per_forward = {"liger_rms_norm": 2 * (layers + blocks), "liger_swiglu": layers + blocks, "liger_rope": layers + blocks}
    assert calls == {n: c * 4 for n, c in per_forward.items()}  # 2 batches x (score_prepared + the labeller's)


@pytest.mark.gpu
def test_prompt_attention_reads_the_kv_heads_directly_in_the_flash_kernel(cuda_labeller, tmp_path, monkeypatch):
    """The causal prompt call gets the KV heads unrepeated (fewer than the query heads) and runs in sdpa's flash kernel
    (forced here: sdpa raises if flash cannot take the call)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from components.curate import scoring as S

    lab = cuda_labeller
    model, _ = lab._load()
    cfg = model.config.text_config
    assert cfg.num_key_value_heads < cfg.num_attention_heads  # the tiny model groups its query heads
    sdpa = S.F.scaled_dot_product_attention
    heads_seen = []

    def flash_for_the_prompt(q, k, v, **kw):
        if not kw.get("is_causal"):
            return sdpa(q, k, v, **kw)
        heads_seen.append((q.shape[1], k.shape[1], v.shape[1]))
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            return sdpa(q, k, v, **kw)

    batch = _batches(lab, tmp_path, seed=3)[0]
    with torch.inference_mode():
        want = S.score_prepared(model, batch)
        monkeypatch.setattr(S.F, "scaled_dot_product_attention", flash_for_the_prompt)
        got = S.score_prepared(model, batch)
    assert heads_seen == [(cfg.num_attention_heads, cfg.num_key_value_heads, cfg.num_key_value_heads)] * cfg.num_hidden_layers
    assert (got - want).abs().max().item() < 0.05  # the forced flash forward scores as the default dispatch


@pytest.mark.gpu
def test_labeller_benchmark_runs_on_gpu(tmp_path):
    import importlib.util
    import json

    from benchmarks.labeller import main

    liger = importlib.util.find_spec("liger_kernel") is not None
    out = tmp_path / "bench.json"
    assert main(["--device", "cuda", "--small", "--questions", "24", "--baseline-questions", "24",
                 "--warmup-questions", "4", "--compile", *(["--liger"] if liger else []), "--json-out", str(out)]) == 0
    res = json.loads(out.read_text())
    want = ["baseline", "fast", "compiled"] + (["liger"] if liger else [])
    assert [r["variant"] for r in res["results"]] == want, res.get("compile_error")
    assert [r["liger_kernels"] for r in res["results"]] == [v == "liger" for v in want]
    assert res["matmul_8192_tflops"] > 0
