"""The sharpen step's rollout engines on the tiny model, against TRL's own path: the shared-prefix engine returns the
same prompt ids as TRL's tokenisation and the same completion ids as TRL's generate in a greedy-like setting, samples
the same distribution (two-sample test against TRL's generate), and reports the log-probabilities TRL's own forward
computes; GRPO-CARE's shared-prefix reference scoring equals its per-completion loop. Plus the pure pieces."""

from __future__ import annotations

import pytest

from components.grpo.config import SharpenConfig
from components.grpo.rollout import (
    cut_at_eos,
    left_pad,
    prompt_key,
    prompt_keys,
    prompt_runs,
    require_rollout_backend,
    rollout_trainer_args,
)


@pytest.mark.parametrize(
    "keys, runs",
    [
        (["a", "a", "a", "b", "b", "b"], [(0, 3), (3, 3)]),  # TRL's layout: each prompt's copies side by side
        (["a", "a", "b", "b", "b", "b", "c", "c"], [(0, 2), (2, 4), (6, 2)]),  # a process holding parts of groups
        (["a", "b", "a"], [(0, 1), (1, 1), (2, 1)]),  # equal prompts apart are separate runs (order is kept)
        (["x"], [(0, 1)]),  # a single row
        ([], []),  # nothing to sample
    ],
)
def test_prompt_runs(keys, runs):
    assert prompt_runs(keys) == runs


@pytest.mark.parametrize(
    "seq, eos, expected",
    [
        ([5, 6, 2, 0, 0], {2}, [5, 6, 2]),  # cut after the end token, which TRL keeps
        ([5, 2, 7, 2], {2}, [5, 2]),  # the FIRST end token counts
        ([5, 6, 7], {2}, [5, 6, 7]),  # no end token: truncated at the length limit, kept whole
        ([3, 5], {2, 3}, [3]),  # any of several end tokens
    ],
)
def test_cut_at_eos(seq, eos, expected):
    ids, logps = cut_at_eos(seq, [float(i) for i in range(len(seq))], eos)
    assert ids == expected and logps == [float(i) for i in range(len(expected))]


def test_left_pad():
    assert left_pad([[1, 2, 3], [4]], 0) == ([[1, 2, 3], [0, 0, 4]], [[1, 1, 1], [0, 0, 1]])


def test_prompt_key_reads_the_pixels():
    import numpy as np
    from PIL import Image

    a = np.zeros((8, 8, 3), dtype=np.uint8)
    b = a.copy()
    b[0, 0, 0] = 1

    def msg(img, text="q?"):
        return [{"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": text}]}]

    assert prompt_key(msg(Image.fromarray(a))) == prompt_key(msg(Image.fromarray(a.copy())))  # equal content
    assert prompt_key(msg(Image.fromarray(a))) != prompt_key(msg(Image.fromarray(b)))  # one pixel differs
    assert prompt_key(msg(Image.fromarray(a))) != prompt_key(msg(Image.fromarray(a), "other?"))  # other text
    # the memoised form gives the same keys (one image object shared by rows is hashed once)
    shared = Image.fromarray(a)
    batch = [msg(shared), msg(shared), msg(Image.fromarray(b)), msg(shared, "other?")]
    assert prompt_keys(batch) == [prompt_key(m) for m in batch]


@pytest.mark.parametrize(
    "rollout, steps, expected",
    [
        ("trl", 0, {}),  # TRL's own generation, TRL's default rollout batch
        ("shared_prefix", 0, {}),  # the engine is a trainer argument (rollout_func), not a GRPOConfig field
        ("shared_prefix", 4, {"steps_per_generation": 4}),  # one rollout batch serves 4 micro-steps
        ("vllm", 0, {"use_vllm": True, "vllm_mode": "colocate"}),  # TRL's colocated vLLM
    ],
)
def test_rollout_trainer_args(rollout, steps, expected):
    got = rollout_trainer_args(rollout, steps_per_generation=steps, vllm_gpu_memory_utilization=0.3)
    assert got == {"vllm_gpu_memory_utilization": 0.3, **expected}  # (TRL reads that one only with use_vllm)


def test_unknown_rollout_and_missing_vllm_are_refused():
    import importlib.util

    with pytest.raises(ValueError, match="rollout='fast'"):
        SharpenConfig(rollout="fast")
    with pytest.raises(ValueError, match="rollout_max_rows=0"):
        SharpenConfig(rollout_max_rows=0)
    require_rollout_backend("shared_prefix")  # needs nothing beyond torch / transformers
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(ValueError, match="rollout=vllm needs vLLM"):
            require_rollout_backend("vllm")


# --- against TRL's own path, on the tiny model ------------------------------------------------------------------


@pytest.fixture(scope="module")
def peaked_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with larger random text weights (so continuations vary), saved as a model dir."""
    import torch

    from components.common.modeling import load_model_and_processor
    from components.common.training import save_model_dir

    model, proc = load_model_and_processor(str(tiny_model_dir), device="cpu")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.model.language_model.parameters():
            if p.ndim == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    out = tmp_path_factory.mktemp("peaked") / "model"
    out.mkdir()
    save_model_dir(model, proc, out)
    return out


def _rows(n=3):
    """GRPO rows whose prompts differ in length (left padding) and image."""
    import numpy as np
    from PIL import Image

    from components.common.prompts import build_messages
    from components.common.records import MCQRecord

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        rec = MCQRecord(id=f"q{i}", question="Which finding is shown here?" + " Look closely." * i,
                        options=["normal", "abnormal"], answer="AB"[i % 2], image="x.png", task="t", modality="CT")
        rows.append({"prompt": build_messages(rec, "direct"), "answer": rec.answer, "options": rec.options,
                     "image": Image.fromarray(rng.integers(0, 255, (56, 56, 3), dtype=np.uint8))})
    return rows


def _trainer(model_dir, tmp_path, **cfg_kw):
    """The sharpen step's own trainer (make_grpo_trainer), fp32 on CPU."""
    from trl import GRPOConfig

    from components.common.modeling import load_model_and_processor
    from components.common.sampling import suppressed_token_ids
    from components.grpo.train import grpo_trainer_args, make_grpo_trainer

    cfg = SharpenConfig(**{"prompt_format": "direct", "num_generations": 3, "max_new_tokens": 10,
                           "consistency_bonus": 0.0, "seed": 0, **cfg_kw})
    model, proc = load_model_and_processor(str(model_dir), device="cpu")
    args = GRPOConfig(**grpo_trainer_args(cfg, max_steps=1, on_cuda=False, output_dir=str(tmp_path / "trl"),
                                          suppress=suppressed_token_ids(proc.tokenizer)))
    trainer = make_grpo_trainer(cfg, model=model, processor=proc, args=args, rows=_rows())
    trainer.model.train()
    return trainer


def _prompts(rows, g):
    """What `_generate` receives: each row's messages with its image, repeated g times side by side."""
    from trl.data_utils import prepare_multimodal_messages

    return [prepare_multimodal_messages(r["prompt"], images=[r["image"]]) for r in rows for _ in range(g)]


def test_greedy_like_rollout_equals_trl_generate(peaked_dir, tmp_path):
    # top_p so small that only the most probable token is in the nucleus: both engines decode greedily, so the same
    # prompts give the same token ids, token for token (fp32 on CPU).
    from components.grpo.rollout import SharedPrefixRollout

    trainer = _trainer(peaked_dir, tmp_path, rollout="trl", top_p=1e-6, max_new_tokens=12)
    prompts = _prompts(_rows(), 3)
    stock = trainer._generate(prompts)
    trainer.rollout_func = SharedPrefixRollout(max_rows=4)  # 3 rows per prompt: one prompt per sampler call
    fast = trainer._generate(prompts)
    assert fast[0] == [list(p) for p in stock[0]]  # prompt ids: TRL's own tokenisation, images expanded
    assert len({len(p) for p in fast[0]}) > 1  # prompts of different lengths: left padding was exercised
    assert fast[1] == stock[1]  # completion ids
    assert len({tuple(c) for c in fast[1]}) == 3 and len(set(fast[1][0])) > 3  # varied text: a real comparison
    assert [c[0]["content"] for c in fast[3]] == [c[0]["content"] for c in stock[3]]  # decoded completions
    assert trainer.rollout_func.last["sampler_calls"] == 3 and trainer.rollout_func.last["prompts"] == 3


def test_rollout_samples_what_trl_generate_samples(peaked_dir, tmp_path):
    # One new token, 1,500 draws per engine at temperature 0.8 / top-p 0.9: the two histograms are samples of one
    # distribution (two-sample chi-square; seeded, so deterministic), and no token outside the nucleus is drawn.
    import numpy as np
    import torch
    from scipy.stats import chi2_contingency

    from components.grpo.rollout import SharedPrefixRollout

    trainer = _trainer(peaked_dir, tmp_path, rollout="trl", temperature=0.8, top_p=0.9, max_new_tokens=1,
                       num_generations=1500)
    prompts = _prompts(_rows(1), 1500)
    torch.manual_seed(0)
    stock = [c[0] for c in trainer._generate(prompts)[1]]
    trainer.rollout_func = SharedPrefixRollout(max_rows=2000, seed=0)
    fast = [c[0] for c in trainer._generate(prompts)[1]]
    tokens = sorted(set(stock) | set(fast))
    table = np.array([[stock.count(t) for t in tokens], [fast.count(t) for t in tokens]])
    keep = table.sum(0) >= 10  # chi-square cells need counts; the rare tokens are pooled into one
    table = np.column_stack([table[:, keep], table[:, ~keep].sum(1)])
    assert table.shape[1] >= 4  # several tokens are likely: a meaningful test
    assert chi2_contingency(table).pvalue > 1e-3
    # The nucleus, from the model's own distribution for this prompt (suppressed tokens excluded).
    from components.grpo.rollout import left_pad

    ids, _, mm = trainer._tokenize_prompts(prompts[:1])
    mm = {k: torch.as_tensor(v) for k, v in mm.items()}
    with torch.no_grad():
        logits = trainer.model(input_ids=torch.tensor(left_pad(ids, 0)[0]), **mm).logits[0, -1] / 0.8
    logits[trainer.generation_kwargs["suppress_tokens"]] = float("-inf")  # never drawn, by either engine
    probs = torch.softmax(logits.float(), -1)
    nucleus = {t for t in range(len(probs)) if float(probs[probs > probs[t]].sum()) < 0.9}
    assert set(fast) <= nucleus


@pytest.mark.parametrize("lora", [False, True])
def test_rollout_logprobs_equal_trls_forward(peaked_dir, tmp_path, lora):
    # The whole of TRL's scoring path with the engine plugged in: `_generate_and_score_completions` pads the returned
    # ids, processes the images for the forward and keeps the returned log-probabilities as the sampling
    # log-probabilities; TRL's own forward of the policy on the same batch gives the same numbers. With LoRA the
    # rollout samples from the adapters merged into a copy of the base weights; the training forward runs them apart.
    import torch

    trainer = _trainer(peaked_dir, tmp_path, rollout="shared_prefix", temperature=0.7, top_p=0.9, lora=lora)
    merged_during = []
    if lora:
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for n, p in trainer.model.named_parameters():
                if "lora_B" in n:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        layers = [m for m in trainer.model.modules() if hasattr(m, "lora_A") and hasattr(m, "merged")]
        sample = trainer.rollout_func._sample

        def spy(*a, **kw):
            merged_during.append(all(m.merged for m in layers))
            return sample(*a, **kw)

        trainer.rollout_func._sample = spy
    rows = [dict(r) for r in _rows() for _ in range(3)]
    out = trainer._generate_and_score_completions(rows)
    if lora:
        assert merged_during and all(merged_during) and not any(m.merged for m in layers)
    mask = out["completion_mask"].bool()
    assert mask.sum() > 10
    with torch.no_grad():
        ref, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, torch.cat([out["prompt_ids"], out["completion_ids"]], 1),
            torch.cat([out["prompt_mask"], out["completion_mask"]], 1), out["completion_ids"].size(1),
            pixel_values=out["pixel_values"], image_grid_thw=out["image_grid_thw"], num_images=out["num_images"],
            mm_token_type_ids=out.get("mm_token_type_ids"),
        )
    got = out["sampling_per_token_logps"]
    assert torch.allclose(got[mask], ref[mask], atol=1e-4), (got[mask] - ref[mask]).abs().max()


def test_care_shared_prefix_scoring_equals_the_per_completion_loop(peaked_dir, tmp_path):
    import torch

    trainer = _trainer(peaked_dir, tmp_path, consistency_bonus=0.5)
    assert trainer.shared_prefix_scoring  # the default engine scores with the shared prefix
    tok = trainer._tokenizer
    texts = ["<think>a mass</think><answer>A</answer>", "<answer>B</answer>", "no answer at all",
             "<think>x</think><answer>A</answer>", "<answer>B</answer><|im_end|>", "<answer>A</answer>",
             "<think>long reasoning here</think><answer>B</answer>", "<answer>A</answer>", ""]
    completions = [tok.encode(t) for t in texts]
    prompts = _prompts(_rows(), 3)
    shared = trainer._reference_confidence_shared(prompts, completions)
    each = trainer._reference_confidence_each(prompts, completions)
    assert shared[2] == 0 and shared[8] == 0  # nothing to score: confidence 0 in both
    assert (shared > 0).sum() == 7
    assert torch.allclose(shared, each, atol=1e-5), (shared - each).abs().max()


def test_a_rollout_batch_prepares_each_image_once(peaked_dir, tmp_path, prepared_images):
    # The rollout, CARE's reference and TRL's forward inputs all prepare the batch's images (TRL hands the rollout
    # deep copies); inside one `_generate_and_score_completions` each image is prepared once.
    trainer = _trainer(peaked_dir, tmp_path, rollout="shared_prefix", consistency_bonus=0.5)
    proc = trainer.processing_class
    prepared = prepared_images(proc)
    rows = [dict(r) for r in _rows() for _ in range(3)]
    out = trainer._generate_and_score_completions(rows)
    assert len(prepared) == 3 and out["pixel_values"].shape[0] > 0
    assert proc._image_memo is None
