"""The policy forward with each group's prompt computed once (components.grpo.prompt_once) against TRL's own forward:
the same per-token log-probabilities and entropies, and the same LoRA gradients, on the tiny model in fp32."""

from __future__ import annotations

import collections

import pytest

from tests.unit.grpo.test_grpo_rollout import _rows, _trainer, peaked_dir  # noqa: F401  (fixture)


def test_group_rows_by_tokens_mask_and_pixels():
    import torch

    from components.grpo.prompt_once import group_rows, pixel_row_spans

    ids = torch.tensor([[0, 5, 6], [0, 5, 6], [0, 5, 6], [7, 5, 6], [7, 5, 6], [0, 5, 6]])
    mask = torch.tensor([[0, 1, 1], [0, 1, 1], [0, 1, 1], [1, 1, 1], [1, 1, 1], [0, 1, 1]])
    grid = torch.tensor([[1, 2, 2]] * 6)
    spans = pixel_row_spans(grid, None, 6)
    assert spans[:2] == [(0, 4), (4, 8)]
    pixels = torch.zeros(24, 3)
    pixels[8:12] = 1.0  # row 2: same tokens as rows 0-1, other image
    plan = group_rows(ids, mask, pixels, spans)
    assert plan.group_index == [0, 0, 1, 2, 2, 3]  # equal prompts apart from each other stay separate groups
    assert plan.reps == [0, 2, 3, 5] and plan.n_groups == 4
    assert group_rows(ids, mask).group_index == [0, 0, 0, 1, 1, 2]  # text only: tokens and mask decide
    with pytest.raises(ValueError, match="do not match"):
        pixel_row_spans(grid, [2, 2], 6)


def test_care_reference_chunks_by_rows_times_length():
    from components.grpo.care import _chunks

    runs = [(0, 3), (3, 3), (6, 3), (9, 3)]
    assert _chunks(runs, [4, 4, 10, 2], budget=24) == [[(0, 3), (3, 3)], [(6, 3)], [(9, 3)]]
    assert _chunks(runs, [1, 1, 1, 1], budget=1) == [[r] for r in runs]  # one run per chunk at the least
    assert _chunks(runs, [1, 1, 1, 1], budget=100) == [runs]


def _batch(trainer):
    """A scored GRPO batch from the trainer's own rollout: 3 prompts x 3 completions of varied lengths."""
    rows = [dict(r) for r in _rows() for _ in range(3)]
    out = trainer._generate_and_score_completions(rows)
    assert out["completion_mask"].sum(1).unique().numel() > 1  # completions of several lengths: padding exercised
    return out


def _logps(trainer, out, prompt_once: bool, batch_size=None):
    import torch

    trainer.enable_prompt_once(prompt_once)
    try:
        return trainer._get_per_token_logps_and_entropies(
            trainer.model, torch.cat([out["prompt_ids"], out["completion_ids"]], 1),
            torch.cat([out["prompt_mask"], out["completion_mask"]], 1), out["completion_ids"].size(1),
            batch_size=batch_size, compute_entropy=True, pixel_values=out["pixel_values"],
            image_grid_thw=out["image_grid_thw"], num_images=out["num_images"],
            mm_token_type_ids=out.get("mm_token_type_ids"),
        )
    finally:
        trainer.enable_prompt_once(True)


@pytest.mark.parametrize("batch_size", [None, 4])  # 4: chunks that cut through a group of 3
def test_prompt_once_equals_trls_forward_and_gradients(peaked_dir, tmp_path, batch_size):  # noqa: F811
    import torch

    trainer = _trainer(peaked_dir, tmp_path, rollout="shared_prefix", temperature=0.7, lora=True,
                       learning_rate=1e-4)
    assert trainer.prompt_once and trainer.prompt_once_why == "on"
    out = _batch(trainer)
    mask = out["completion_mask"].bool()
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    assert params and all("lora" in n for n, p in trainer.model.named_parameters() if p.requires_grad)
    weights = torch.randn(mask.shape, generator=torch.Generator().manual_seed(0))
    grads, scores = [], []
    for fast in (False, True):
        trainer.model.zero_grad()
        logps, ent, _ = _logps(trainer, out, fast, batch_size)
        ((logps * weights * mask).sum() + (ent * mask).sum() * 0.1).backward()
        grads.append([p.grad.clone() for p in params])
        scores.append((logps.detach(), ent.detach()))
    (ref_lp, ref_ent), (lp, ent) = scores
    calls = trainer.prompt_once_calls  # each side really took its own path
    assert calls.get("prompt once", 0) >= 1 and any(k.startswith("TRL's: off in the recipe") for k in calls)
    assert torch.allclose(lp[mask], ref_lp[mask], atol=1e-4), (lp[mask] - ref_lp[mask]).abs().max()
    assert torch.allclose(ent[mask], ref_ent[mask], atol=1e-4), (ent[mask] - ref_ent[mask]).abs().max()
    assert (lp[~mask] == 0).all()
    assert any(g.abs().sum() > 0 for g in grads[0])  # the adapters do get a gradient: a real comparison
    for ref, got in zip(*grads, strict=True):
        assert torch.allclose(got, ref, atol=1e-4, rtol=1e-3), (got - ref).abs().max()


def test_prompt_once_runs_a_training_step_through_the_wrappers(peaked_dir, tmp_path):  # noqa: F811
    # The trainer's own compute_loss goes through model(...) (PEFT wrapper, accelerate's autocast): one step's loss
    # with the prompt computed once equals the loss of TRL's forward on the same batch.
    import torch

    trainer = _trainer(peaked_dir, tmp_path, rollout="shared_prefix", temperature=0.7, lora=True)
    out = _batch(trainer)
    out["advantages"] = torch.linspace(-1, 1, out["completion_ids"].size(0))
    trainer.current_gradient_accumulation_steps = 1  # what Trainer's loop sets before compute_loss
    losses = []
    for fast in (False, True):
        trainer.enable_prompt_once(fast)
        trainer.prompt_once_calls = {}
        losses.append(trainer.compute_loss(trainer.model, out).item())
        assert list(trainer.prompt_once_calls) == (
            ["prompt once"] if fast else ["TRL's: off in the recipe (shared_prompt_forward: false)"])
    assert losses[0] != 0 and losses[1] == pytest.approx(losses[0], abs=1e-5)


def test_prompt_once_is_refused_where_it_does_not_apply(peaked_dir, tmp_path):  # noqa: F811
    trainer = _trainer(peaked_dir, tmp_path, shared_prompt_forward=False)
    assert not trainer.prompt_once and "shared_prompt_forward: false" in trainer.prompt_once_why
    trainer.args.gradient_checkpointing = True  # as on a GPU with the recipe's default
    trainer.enable_prompt_once(True)
    assert not trainer.prompt_once and "gradient checkpointing" in trainer.prompt_once_why


def test_group_permutation_keeps_runs_whole():
    import torch

    from components.grpo.prompt_once import group_permutation, permute_rows

    ids = torch.tensor([[0, 5], [0, 5], [0, 5], [7, 8], [7, 8], [0, 5], [0, 5], [9, 9]])  # a prompt may recur later
    order = group_permutation(ids, torch.Generator().manual_seed(1))
    assert sorted(order) == list(range(8))
    runs = [[0, 1, 2], [3, 4], [5, 6], [7]]
    pos = [order.index(r[0]) for r in runs]
    assert all(order[p : p + len(r)] == r for p, r in zip(pos, runs, strict=True))  # each run intact, in order
    assert order != list(range(8))  # and the runs did move (this seed)
    batch = {"x": torch.arange(8) * 10, "names": list("abcdefgh"), "n": torch.tensor(3), "none": None}
    out = permute_rows(batch, order)
    assert out["x"].tolist() == [10 * i for i in order] and out["names"] == ["abcdefgh"[i] for i in order]
    assert out["n"].item() == 3 and out["none"] is None


@pytest.mark.parametrize("prompt_once", [True, False])
def test_micro_batches_hold_whole_groups_with_the_prompt_once_forward(peaked_dir, tmp_path, prompt_once):  # noqa: F811
    # 4 prompts x 3 completions served as 4 micro-batches of 3 rows: with the prompt-once forward each micro-batch is
    # one prompt's group; TRL's own shuffle (prompt-once off) scatters the groups.
    import torch

    trainer = _trainer(peaked_dir, tmp_path, rollout="shared_prefix", temperature=0.7, prompts_per_step=1,
                       gradient_accumulation_steps=4, shared_prompt_forward=prompt_once)
    trainer.enable_prompt_once(prompt_once)
    torch.manual_seed(0)
    rows = [dict(r) for r in _rows(4) for _ in range(3)]
    first = trainer._prepare_inputs(rows)
    micro = trainer._buffered_inputs
    assert len(micro) == 4 and first is micro[0]
    whole = [bool((m["prompt_ids"] == m["prompt_ids"][0]).all()) for m in micro]
    assert all(whole) if prompt_once else not all(whole)
    counts = collections.Counter(tuple(r.tolist()) for m in micro for r in m["prompt_ids"])
    assert sorted(counts.values()) == [3, 3, 3, 3]  # every row served once: 4 prompts x 3


@pytest.mark.parametrize(("aux", "pixels", "kwargs", "why"), [
    (False, True, {"mm_token_type_ids": 1, "token_type_ids": 1, "image_sizes": None}, None),
    (True, True, {}, "auxiliary (MoE) loss"),
    (False, False, {}, "without images"),
    (False, True, {"pixel_attention_mask": 1, "image_sizes": 2}, "does not handle: image_sizes, pixel_attention_mask"),
])
def test_which_batches_take_trls_forward(aux, pixels, kwargs, why):
    from components.grpo.prompt_once import PromptOnceMixin

    m = PromptOnceMixin()
    m.prompt_once, m.prompt_once_why = True, "on"
    got = m._prompt_once_refusal(aux, 1 if pixels else None, 1, kwargs)
    assert got == why if why is None else why in got
    m.prompt_once, m.prompt_once_why = False, "off in the recipe"
    assert m._prompt_once_refusal(False, 1, 1, {}) == "off in the recipe"


def test_rows_dataset_keeps_images_out_of_the_table_and_reads_each_file_once(tmp_path, monkeypatch):
    # TRL fetches a generation batch once per accumulation micro-step: an image must not be decoded at every fetch.
    import numpy as np
    from PIL import Image

    import components.common.records as records
    from components.grpo.train import rows_dataset

    path = tmp_path / "a.png"
    Image.fromarray(np.full((8, 8, 3), 7, dtype=np.uint8)).save(path)
    opened = []
    real = records.open_rgb
    monkeypatch.setattr(records, "open_rgb", lambda p: opened.append(p) or real(p))
    in_memory = Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8))
    rows = [{"prompt": [{"role": "user", "content": "q"}], "image": str(path), "answer": "A", "options": ["x", "y"]},
            {"prompt": [{"role": "user", "content": "r"}], "image": in_memory, "answer": "B", "options": ["x", "y"]},
            {"prompt": [{"role": "user", "content": "s"}], "image": None, "answer": "A", "options": ["x", "y"]}]
    ds = rows_dataset(rows, cache_images=4)
    assert "image" not in ds.column_names and len(ds) == 3
    for _ in range(3):
        batch = ds.__getitems__([0, 0, 1, 2])
        assert batch[0]["image"].getpixel((0, 0)) == (7, 7, 7) and batch[1]["image"] is batch[0]["image"]
        assert batch[2]["image"] is in_memory and batch[3]["image"] is None
        assert [b["answer"] for b in batch] == ["A", "A", "B", "A"] and batch[0]["prompt"][0]["content"] == "q"
    assert opened == [str(path)]  # read once, then served from the cache
