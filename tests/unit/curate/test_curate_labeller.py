"""Modality labeller on the tiny model: constrained scores equal a plain forward pass; the cache resumes."""

from __future__ import annotations

import json

import pytest

from components.common.records import MODALITIES
from components.curate.labeller import LabelCache, ModalityLabeller, label_modalities
from components.curate.pmcvqa import load_pmc_vqa


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from components.common.modeling import load_model_and_processor

    return load_model_and_processor(str(tiny_model_dir), device="cpu")


def test_cached_prompt_scoring_equals_full_forward(tiny, tiny_model_dir, pmc_root):
    import torch
    from PIL import Image

    model, proc = tiny
    lab = ModalityLabeller(str(tiny_model_dir), model=model, processor=proc)
    recs = load_pmc_vqa(pmc_root).records[:3]
    items = [(Image.open(pmc_root / r.image).convert("RGB"), r.question) for r in recs]
    scores = lab.score_batch(items)  # batched, left-padded prompts of different lengths
    assert [set(s) for s in scores] == [set(MODALITIES)] * 3
    tok = proc.tokenizer
    end = tok.convert_tokens_to_ids("<|im_end|>")
    for (image, question), s in zip(items, scores):
        text = proc.apply_chat_template(lab.messages(question), add_generation_prompt=True, tokenize=False)
        enc = proc(text=[text], images=[image], return_tensors="pt")
        for cand in ("MRI", "X-ray", "none"):
            ids = tok(cand, add_special_tokens=False)["input_ids"] + [end]
            full = torch.cat([enc["input_ids"], torch.tensor([ids])], dim=1)
            mm = torch.cat([enc["mm_token_type_ids"], torch.zeros((1, len(ids)), dtype=enc["mm_token_type_ids"].dtype)], dim=1)
            with torch.no_grad():
                logits = model(input_ids=full, attention_mask=torch.ones_like(full), pixel_values=enc["pixel_values"],
                               image_grid_thw=enc["image_grid_thw"], mm_token_type_ids=mm).logits
            lp = torch.log_softmax(logits[0, -len(ids) - 1 : -1].float(), dim=-1)
            ref = float(sum(lp[j, t] for j, t in enumerate(ids)))
            assert s[cand] == pytest.approx(ref, abs=1e-3)


class Interrupt(RuntimeError):
    pass


@pytest.mark.parametrize(("fast", "workers"), [(False, 0), (True, 0), (True, 2)], ids=["stock", "fast", "fast-workers"])
def test_interrupted_run_resumes_without_labelling_anything_twice(tiny, tiny_model_dir, pmc_root, tmp_path, fast, workers):
    model, proc = tiny
    recs = load_pmc_vqa(pmc_root).records[:10]
    lab = ModalityLabeller(str(tiny_model_dir), model=model, processor=proc)
    scored: list[int] = []  # rows scored per call
    name = "score_prepared" if fast else "score_batch"
    real = getattr(lab, name)

    def counting(batch, fail_after=None):
        if fail_after is not None and sum(scored) >= fail_after:
            raise Interrupt("simulated interruption")
        out = real(batch)
        scored.append(len(out))
        return out

    # the stock path takes 4 questions per batch; the fast path about 4 prompts (~270 tokens each) per 1200 tokens
    kw = {"fast": fast, "workers": workers, "batch_size": 4, "token_budget": 1200}
    cache_path = tmp_path / "labels.jsonl"
    setattr(lab, name, lambda batch: counting(batch, fail_after=1))  # the second batch is interrupted
    with pytest.raises(Interrupt):
        label_modalities(recs, pmc_root, lab, LabelCache(cache_path), **kw)
    first = scored[0]
    assert len(scored) == 1 and 1 < first < 10
    assert len(cache_path.read_text().splitlines()) == first  # the first batch was flushed to disk

    setattr(lab, name, counting)
    labels = label_modalities(recs, pmc_root, lab, LabelCache(cache_path), **kw)
    assert sum(scored) == 10  # the first batch + the missing questions: nothing labelled twice
    assert set(labels) == {r.id for r in recs} and all(e.label in MODALITIES for e in labels.values())
    assert all(e.prompt_version == "modality-v1" and e.model == str(tiny_model_dir) for e in labels.values())

    again = label_modalities(recs, pmc_root, lab, LabelCache(cache_path), **kw)
    assert sum(scored) == 10 and {k: v.label for k, v in again.items()} == {k: v.label for k, v in labels.items()}
    # a new prompt version or labeller is a different cache key: labelled again
    lab.prompt_version = "modality-v2"
    label_modalities(recs[:2], pmc_root, lab, LabelCache(cache_path), **kw)
    assert sum(scored) == 12


def test_fast_path_labels_equal_the_stock_path(ragged_model_dir, ragged_pmc_root, tmp_path):
    """Through label_modalities: length-sorted batches, preprocessing threads, one pass, against the stock path on
    figures of different sizes and questions of different lengths."""
    from components.common.modeling import load_model_and_processor

    model, proc = load_model_and_processor(str(ragged_model_dir), device="cpu")
    recs = load_pmc_vqa(ragged_pmc_root).records
    lab = ModalityLabeller(str(ragged_model_dir), model=model, processor=proc)
    lab.profile = {}
    stock = label_modalities(recs, ragged_pmc_root, lab, LabelCache(tmp_path / "stock.jsonl"), fast=False, batch_size=8)
    stats: dict = {}
    lab.profile = {}
    fast = label_modalities(recs, ragged_pmc_root, lab, LabelCache(tmp_path / "fast.jsonl"), fast=True,
                            token_budget=1500, workers=2, stats=stats)
    assert stats["path"] == "fast" and stats["workers"] == 2 and stats["questions"] == len(recs)
    assert stats["batches"] == stats["planned_batches"] > 2
    assert len(lab.profile["prompt_lengths"]) == len(recs) and lab.profile["prompt_pass_s"] > 0
    assert set(fast) == set(stock) == {r.id for r in recs}
    assert {k: e.label for k, e in fast.items()} == {k: e.label for k, e in stock.items()}
    for k, e in fast.items():
        assert e.scores == pytest.approx(stock[k].scores, abs=1e-4)


def test_torn_last_line_is_ignored(tmp_path):
    path = tmp_path / "c.jsonl"
    good = {"key": "k1", "image_sha256": "i", "question_sha256": "q", "model": "m", "prompt_version": "v",
            "label": "CT", "scores": {"CT": -1.0}, "created_at": ""}
    path.write_text(json.dumps(good) + "\n" + '{"key": "k2", "ima')
    cache = LabelCache(path)
    assert cache.get("k1").label == "CT" and cache.get("k2") is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"label_token_budget": 0}, r"label_token_budget=0 must be >= 1 \(--label-token-budget\)"),  # no batch fits
        ({"label_workers": -2}, r"label_workers=-2 must be >= 0, or -1 for auto \(--label-workers\)"),  # -1 is auto
    ],
)
def test_labelling_knobs_are_checked_where_they_are_set(kwargs, message):
    from components.curate.config import CurateConfig
    from components.curate.label import LabelConfig

    with pytest.raises(ValueError, match=message):
        CurateConfig(**kwargs)
    with pytest.raises(ValueError, match=message):
        LabelConfig(**kwargs)


def test_label_launcher_checks_the_shard_against_the_shard_count():
    from components.curate.label import LabelConfig

    with pytest.raises(ValueError, match=r"label_shard=3 must be in \[0, 3\) for 3 shards \(--label-shard\)"):
        LabelConfig(label_shard=3, label_num_shards=3)
    with pytest.raises(ValueError, match=r"label_num_shards=0 must be >= 1 \(--label-num-shards\)"):
        LabelConfig(label_num_shards=0)


def test_liger_kernels_where_they_cannot_run_are_refused_before_any_model_loads(monkeypatch):
    import importlib.util

    from components.common import modeling

    monkeypatch.setattr(modeling, "load_model_and_processor", lambda *a, **k: pytest.fail("the model was loaded"))
    assert not ModalityLabeller("some/checkpoint", device="cpu").liger_kernels  # off by default: nothing is checked
    with pytest.raises(ValueError, match=r"liger_kernels=True: Liger's kernels are Triton kernels for CUDA GPUs.*"
                                         r"set liger_kernels: false for CPU runs"):
        ModalityLabeller("some/checkpoint", device="cpu", liger_kernels=True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)  # a GPU, but an image without the package
    with pytest.raises(ValueError, match=r"liger_kernels=True needs the liger-kernel package .* set liger_kernels: false"):
        ModalityLabeller("some/checkpoint", device="cuda", liger_kernels=True)


def test_a_cpu_model_is_refused_liger_kernels(tiny, tiny_model_dir):
    model, proc = tiny
    with pytest.raises(ValueError, match="Triton kernels for CUDA GPUs"):
        ModalityLabeller(str(tiny_model_dir), model=model, processor=proc, liger_kernels=True)


@pytest.mark.parametrize("launcher", ["label", "curate"])
def test_launchers_refuse_label_liger_kernels_on_cpu_before_reading_anything(launcher, tmp_path, capsys, monkeypatch):
    """The setting and its fix are named, and the refusal comes first: the sources do not even exist."""
    from components.common import storage
    from components.curate import run

    for module in (storage, run):
        monkeypatch.setattr(module, "local_dir", lambda *a, **k: pytest.fail("a source was read"))
    absent = str(tmp_path / "absent")
    if launcher == "label":
        from components.curate.label import main

        argv = ["--pmc-vqa-root", absent]
    else:
        from components.curate.__main__ import main

        argv = ["--medmnist-root", absent, "--pmc-vqa-root", absent,
                *[a for name in ("medmnist_data", "diag_set", "eval_set", "sft_set", "rl_set", "rl_diag_set",
                                 "curation_report") for a in (f"--out-{name.replace('_', '-')}", str(tmp_path / name))]]
    assert main([*argv, "--device", "cpu", "--label-liger-kernels", "true"]) == 2
    err = capsys.readouterr().err
    assert "label_liger_kernels=True: Liger's kernels are Triton kernels for CUDA GPUs" in err
    assert "set label_liger_kernels: false for CPU runs" in err
