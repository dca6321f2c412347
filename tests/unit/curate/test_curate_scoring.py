"""The labeller's fast path (components.curate.scoring) against the stock Hugging Face path, on CPU in float32.

Each CPU-side helper is checked against what transformers computes (window order, multimodal RoPE positions,
processor token counts), the batched vision tower against the HF tower, and the one-pass scores against the
two-pass stock scores, on images of different sizes (1-4 attention windows, padded segments) and questions of
different lengths."""

from __future__ import annotations

import numpy as np
import pytest

from components.curate import scoring as S
from components.curate.labeller import ModalityLabeller
from components.curate.pmcvqa import load_pmc_vqa


@pytest.fixture(scope="module")
def ragged(ragged_model_dir):
    from components.common.modeling import load_model_and_processor

    model, proc = load_model_and_processor(str(ragged_model_dir), device="cpu")
    return model, proc, ModalityLabeller(str(ragged_model_dir), model=model, processor=proc)


@pytest.fixture(scope="module")
def items(ragged_pmc_root):
    from PIL import Image

    recs = load_pmc_vqa(ragged_pmc_root).records[:7]
    return [(Image.open(ragged_pmc_root / r.image).convert("RGB"), r.question) for r in recs]


@pytest.mark.parametrize(
    ("lengths", "budget", "extra", "want"),
    [
        # longest first; a run stops before rows x its longest length would pass the budget
        ([5, 3, 9, 1], 20, 0, [[2, 0], [1, 3]]),
        # an item longer than the budget alone is a batch of its own, never dropped
        ([50, 10, 10], 30, 0, [[0], [1, 2]]),
        # the candidate tokens appended to every row count against the budget
        ([10, 10, 10], 40, 10, [[0, 1], [2]]),
        # equal lengths keep their index order (the plan is deterministic)
        ([4, 4, 4, 4], 8, 0, [[0, 1], [2, 3]]),
        # a budget that fits everything: one batch
        ([7, 2, 5], 1000, 4, [[0, 2, 1]]),
        # nothing to label
        ([], 16, 0, []),
    ],
)
def test_plan_batches(lengths, budget, extra, want):
    assert S.plan_batches(lengths, budget, extra) == want


def test_plan_batches_rejects_a_budget_below_one():
    with pytest.raises(ValueError, match="token_budget=0"):
        S.plan_batches([3], 0)


@pytest.mark.parametrize(
    ("lengths", "padded"),
    [
        ([4, 4, 4], False),  # equal segments: viewed, no gather, no mask
        ([4, 2, 3], True),
    ],
)
def test_segment_plan(lengths, padded):
    plan = S.segment_plan(lengths)
    assert (plan["n"], plan["lmax"]) == (len(lengths), max(lengths))
    if not padded:
        assert plan["idx"] is None and plan["valid"] is None
        return
    packed = np.arange(sum(lengths))
    gathered = packed[plan["idx"].numpy()]  # (segments, lmax)
    valid = plan["valid"].numpy()[:, 0, 0]
    assert valid.sum(1).tolist() == lengths
    assert gathered[valid].tolist() == packed.tolist()  # each segment's real tokens, in packed order
    assert gathered.ravel()[plan["unpad"].numpy()].tolist() == packed.tolist()  # back to the packed order


@pytest.mark.parametrize("grid", [(1, 4, 4), (1, 8, 22), (1, 18, 10), (1, 16, 16), (1, 2, 2), (1, 12, 6)])
def test_window_order_matches_transformers(grid):
    import torch
    from transformers.vision_utils import get_vision_window_index

    index, cu = get_vision_window_index(torch.tensor([grid]), spatial_merge_size=2, window_size=112, patch_size=14)
    order, lengths = S.window_order(grid[1], grid[2], merge=2, window=4)
    assert order.tolist() == index.tolist()
    assert np.cumsum([0] + [n * 4 for n in lengths]).tolist() == cu.tolist()


def test_mrope_positions_match_get_rope_index(ragged, items):
    model, proc, lab = ragged
    for image, question in items[:4]:
        enc = proc(text=[lab.prompt_text(question)], images=[image], return_tensors="pt")
        ref, _ = model.model.get_rope_index(enc["input_ids"], enc["mm_token_type_ids"],
                                            image_grid_thw=enc["image_grid_thw"], attention_mask=enc["attention_mask"])
        got = S.mrope_positions(enc["input_ids"][0].numpy(), model.config.image_token_id,
                                tuple(enc["image_grid_thw"][0].tolist()), merge=2)
        assert got.tolist() == ref[:, 0].tolist()


def test_predicted_prompt_lengths_equal_the_processor(ragged, items):
    """Batches are planned from lengths computed without processing the image; they must be exact."""
    _, proc, lab = ragged
    sizes = [im.size for im, _ in items] + [(20, 600), (1000, 900), (57, 55)]  # min / max pixel clamps too
    from PIL import Image

    images = [im for im, _ in items] + [Image.new("RGB", s) for s in sizes[len(items):]]
    texts = [lab.prompt_text(q) for _, q in items] + [lab.prompt_text("Is this a CT?")] * 3
    predicted = lab.prompt_lengths(texts, sizes)
    actual = [proc(text=[t], images=[im], return_tensors="np")["input_ids"].shape[1] for t, im in zip(texts, images)]
    assert predicted == actual
    assert len(set(actual)) > 3  # the images really give different prompt lengths


def test_vision_tower_equals_the_hf_tower(ragged, items):
    import torch

    model, proc, lab = ragged
    spec = lab.scoring_spec()
    batch = S.prepare_batch([(im, lab.prompt_text(q)) for im, q in items], proc, spec)
    assert batch["win_seg"]["idx"] is not None and batch["img_seg"]["idx"] is not None  # padded segments
    assert len({g for g in batch["grids"]}) > 3 and batch["win_seg"]["n"] > len(items)  # several windows
    grids = torch.tensor(batch["grids"])
    with torch.inference_mode():
        ref = model.model.visual(batch["pixel_values"], grid_thw=grids).pooler_output
        got = S.vision_tokens(model.model.visual, batch)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


def test_equal_grids_take_the_unpadded_path_and_still_match(ragged):
    import torch
    from PIL import Image

    model, proc, lab = ragged
    images = [Image.fromarray(np.full((112, 112, 3), 40 * i, dtype=np.uint8)) for i in range(3)]
    batch = S.prepare_batch([(im, lab.prompt_text("Which modality?")) for im in images], proc, lab.scoring_spec())
    assert batch["img_seg"]["idx"] is None and batch["win_seg"]["idx"] is None  # 8x8 patches: one full window
    with torch.inference_mode():
        ref = model.model.visual(batch["pixel_values"], grid_thw=torch.tensor(batch["grids"])).pooler_output
        got = S.vision_tokens(model.model.visual, batch)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


def test_one_pass_scores_equal_the_stock_two_pass_scores(ragged, items):
    import torch

    model, proc, lab = ragged
    ref = lab.score_batch(items)  # stock: left-padded prompt pass, KV cache repeated, candidate pass
    batch = S.prepare_batch([(im, lab.prompt_text(q)) for im, q in items], proc, lab.scoring_spec())
    assert len(set(batch["lens"].tolist())) > 3  # right padding really happens
    with torch.inference_mode():
        got = S.score_prepared(model, batch)
    assert got.shape == (len(items), len(lab.candidates))
    want = torch.tensor([[s[c] for c in lab.candidates] for s in ref])
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)
    assert got.argmax(1).tolist() == want.argmax(1).tolist()
    # through the labeller's own entry point (device copy, dict per row)
    rows = lab.score_prepared(batch)
    assert [max(r, key=r.get) for r in rows] == [max(s, key=s.get) for s in ref]


def test_a_batch_of_one_equals_the_same_question_in_a_batch(ragged, items):
    """Padding and batch neighbours change nothing: scoring is per row."""
    import torch

    model, proc, lab = ragged
    spec = lab.scoring_spec()
    batch = S.prepare_batch([(im, lab.prompt_text(q)) for im, q in items[:4]], proc, spec)
    alone = S.prepare_batch([(items[2][0], lab.prompt_text(items[2][1]))], proc, spec)
    with torch.inference_mode():
        torch.testing.assert_close(S.score_prepared(model, alone)[0], S.score_prepared(model, batch)[2],
                                   atol=1e-5, rtol=1e-5)


def _plain_layer(x, ln1, wq, bq, wk, bk, wv, bv, wo, ln2, wg, wu, wd, cos, sin, cand_mask, n, heads, kv_heads, eps):
    """The decoder layer written out plainly: K/V repeated for every query head (`repeat_interleave`), one explicit
    softmax over all S positions with the full mask (prompt rows causal within the prompt, candidate rows
    `cand_mask`)."""
    import torch

    b, s, d = x.shape
    hd = d // heads

    def rms(t, w):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + eps) * w

    def rope(t):  # t (B, heads, S, hd); cos/sin (B, S, 1, hd)
        c, si = cos.transpose(1, 2), sin.transpose(1, 2)
        return t * c + torch.cat((-t[..., hd // 2 :], t[..., : hd // 2]), dim=-1) * si

    h = rms(x, ln1)
    q = rope((h @ wq.T + bq).view(b, s, heads, hd).transpose(1, 2))
    k = rope((h @ wk.T + bk).view(b, s, kv_heads, hd).transpose(1, 2)).repeat_interleave(heads // kv_heads, dim=1)
    v = (h @ wv.T + bv).view(b, s, kv_heads, hd).transpose(1, 2).repeat_interleave(heads // kv_heads, dim=1)
    mask = torch.zeros(b, 1, s, s, dtype=torch.bool)
    mask[:, :, :n, :n] = torch.ones(n, n, dtype=torch.bool).tril()
    mask[:, :, n:] = cand_mask
    att = (q @ k.transpose(-1, -2) * hd**-0.5).masked_fill(~mask, float("-inf")).softmax(-1)
    x = x + (att @ v).transpose(1, 2).reshape(b, s, d) @ wo.T
    h = rms(x, ln2)
    return x + (torch.nn.functional.silu(h @ wg.T) * (h @ wu.T)) @ wd.T


@pytest.mark.parametrize(
    ("heads", "kv_heads"),
    [
        (10, 2),  # 5 query heads per KV head, as Qwen2.5-VL-32B's 40 / 8: the fold puts 5 x T rows per KV head
        (6, 1),  # one KV head for all (multi-query attention)
        (4, 4),  # no grouping: the fold is the identity
    ],
)
def test_text_layer_without_repeated_kv_equals_a_plain_layer(heads, kv_heads):
    """The layer folds the query heads of each KV head into the candidate call's query axis and lets sdpa read the
    KV heads of the prompt call directly; row by row it is the same attention as repeating K/V per query head.
    Candidates of different lengths (each row of the mask differs) and prompts of different lengths (padding)."""
    import torch

    g = torch.Generator().manual_seed(heads * 10 + kv_heads)
    hd, inter, eps = 8, 24, 1e-6
    d, dkv = heads * hd, kv_heads * hd
    lens, cands = [5, 9, 7], ((3, 4), (5,), (6, 7, 8))  # prompt lengths; token ids of 3 candidates
    b, n = len(lens), max(lens)
    flat, cand_of, within = S.candidate_layout(cands)
    t = len(flat)
    s = n + t

    def rand(*shape, scale=0.3):
        return torch.randn(*shape, generator=g, dtype=torch.float64) * scale

    weights = dict(ln1=1 + rand(d), wq=rand(d, d), bq=rand(d), wk=rand(dkv, d), bk=rand(dkv), wv=rand(dkv, d),
                   bv=rand(dkv), wo=rand(d, d), ln2=1 + rand(d), wg=rand(inter, d), wu=rand(inter, d), wd=rand(d, inter))
    x = rand(b, s, d, scale=1.0)
    pos = torch.randint(0, 50, (b, s), generator=g).double()
    ang = pos[..., None] * 10000 ** (-torch.arange(hd // 2, dtype=torch.float64) / (hd // 2))
    cos, sin = (torch.cat((f, f), -1)[:, :, None] for f in (ang.cos(), ang.sin()))  # (B, S, 1, hd)
    prompt_keys = torch.arange(n)[None, :] < torch.tensor(lens)[:, None]
    own = torch.from_numpy((cand_of[:, None] == cand_of[None, :]) & (np.arange(t)[None, :] <= np.arange(t)[:, None]))
    cand_mask = torch.cat([prompt_keys[:, None, :].expand(b, t, n), own[None].expand(b, t, t)], dim=2)[:, None]

    w = weights
    with torch.inference_mode():
        got = S.text_layer(x, w["ln1"], w["wq"], w["bq"], w["wk"], w["bk"], w["wv"], w["bv"], w["wo"], w["ln2"],
                           w["wg"], w["wu"], w["wd"], cos, sin, cand_mask, n, heads, kv_heads, eps, "silu")
        want = _plain_layer(x, *weights.values(), cos, sin, cand_mask, n, heads, kv_heads, eps)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def _liger_stand_in(calls):
    """Liger's functional kernels written in torch, keeping the interface `scoring` relies on (liger-kernel 0.8.5,
    liger_kernel/transformers/functional.py and ops/): rms_norm rounds as Qwen2 in the "llama" casting mode; swiglu
    takes SiLU in float32, rounds it, times up; rope takes q (bsz, heads, seq, hd) and k (bsz, kv_heads, seq, hd)
    whose PHYSICAL layout is (bsz, seq, heads, hd) rows, cos/sin (1 or bsz, seq, hd) of which it reads the first half,
    computes in cos's dtype and writes q's. Counts the calls."""
    import types

    import torch

    def liger_rms_norm(x, w, eps, offset=0.0, casting_mode="llama", in_place=True):
        calls["rms_norm"] += 1
        assert casting_mode == "llama" and offset == 0.0 and x.shape[-1] == w.shape[0]
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w

    def liger_swiglu(a, b):
        calls["swiglu"] += 1
        assert a.shape == b.shape
        return torch.nn.functional.silu(a.float()).to(b.dtype) * b

    def liger_rope(q, k, cos, sin, position_ids=None, unsqueeze_dim=1):
        calls["rope"] += 1
        bsz, _, seq, hd = q.shape
        assert cos.dim() == 3 and cos.shape[0] in (1, bsz) and cos.shape[1:] == (seq, hd) and sin.shape == cos.shape
        half = hd // 2
        c, si = cos[..., None, :half], sin[..., None, :half]  # (1 or bsz, seq, 1, hd/2): first halves only

        def rotate(t):  # Triton reads the physical (bsz, seq, heads, hd) rows: the transpose back must be contiguous
            rows = t.transpose(1, 2).contiguous()  # no copy where it is contiguous (Liger's `.contiguous()` too)
            x1, x2 = rows[..., :half].to(cos.dtype), rows[..., half:].to(cos.dtype)
            out = torch.cat((x1 * c - x2 * si, x2 * c + x1 * si), dim=-1).to(t.dtype)
            rows.copy_(out)  # in place, as the kernel
            return rows.transpose(1, 2)

        return rotate(q), rotate(k)

    return types.SimpleNamespace(liger_rms_norm=liger_rms_norm, liger_swiglu=liger_swiglu, liger_rope=liger_rope)


def test_liger_kernels_are_called_at_every_norm_mlp_and_rotary_with_their_layouts(ragged, items, monkeypatch):
    """liger_kernels=True reaches every vision block and decoder layer, with the shapes Liger's kernels take; with
    torch stand-ins of the same formulas the scores equal the plain path's (the real kernels: tests/gpu)."""
    import collections

    import torch

    model, proc, lab = ragged
    calls: collections.Counter = collections.Counter()
    monkeypatch.setattr(S, "_liger", lambda: _liger_stand_in(calls))
    batch = S.prepare_batch([(im, lab.prompt_text(q)) for im, q in items[:4]], proc, lab.scoring_spec())
    with torch.inference_mode():
        plain = S.score_prepared(model, batch)
        assert not calls  # off by default
        liger = S.score_prepared(model, batch, liger_kernels=True)
    layers, blocks = model.config.text_config.num_hidden_layers, model.config.vision_config.depth
    assert calls == {"rms_norm": 2 * (layers + blocks), "swiglu": layers + blocks, "rope": layers + blocks}
    torch.testing.assert_close(liger, plain, atol=1e-5, rtol=1e-5)


def test_flop_counts_by_hand():
    tcfg = {"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 1, "vocab_size": 10}
    # per token per layer: q 64 + k,v 2*8*4 + o 64 + mlp 3*8*16 = 576 MACs; causal pairs of 3 tokens = 6
    assert S.text_flops(tcfg, 3) == 2 * (3 * 2 * 576 + 4 * 8 * 6)
    # one candidate of 2 tokens after a 3-token prompt: 5 tokens, pairs 6 + (2*3 + 3), 2 LM-head positions
    assert S.text_flops(tcfg, 3, [2], logits=2) == 2 * (5 * 2 * 576 + 4 * 8 * 15) + 2 * 8 * 10 * 2
    vcfg = {"hidden_size": 4, "intermediate_size": 6, "depth": 2, "spatial_merge_size": 2, "window_size": 112,
            "patch_size": 14, "temporal_patch_size": 2, "fullatt_block_indexes": [1], "out_hidden_size": 5}
    # 4x4 patches: one window of 16; per patch per block 3*16+16+3*24 = 136 MACs
    s, patch_in = 16, 3 * 2 * 14 * 14
    want = 2 * s * patch_in * 4 + 2 * (2 * s * 136) + 4 * 4 * 16 * 16 * 2 + 2 * 4 * (16 * 16 + 16 * 5)
    assert S.vision_flops(vcfg, 4, 4) == want
