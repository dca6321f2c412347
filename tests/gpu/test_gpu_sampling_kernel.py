"""The fused sampling kernel compiled on a CUDA GPU (run with `make test-gpu`): token for token the draw of the
definition from the same uniforms (tests/sampling_cases.py, as the CPU interpreter test), from bf16 logits too; at the
diagnosis shape (1,088 rows x 152,064 tokens) with its own generator every draw lies in its row's nucleus; and the
sampler's greedy rows are the same with the kernel as with torch ops."""

from __future__ import annotations

import pytest
import torch

from tests.sampling_cases import CASES, reference_draw, sampling_case

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case, scale, quantise, top_p", CASES)
def test_compiled_kernel_draws_the_explicit_nucleus(case, scale, quantise, top_p, dtype):
    from components.common.sampling_kernel import fused_sample

    logits, u, banned, done = sampling_case(scale, quantise, rows=48, vocab=5000, device="cuda")  # two blocks
    logits = logits.to(dtype)
    got, logp = fused_sample(logits, temperature=0.7, top_p=top_p, uniforms=u, suppress_mask=banned, done=done,
                             pad_id=99, greedy_every=17, logprobs=True)
    want, _ = reference_draw(logits.float(), u, temperature=0.7, top_p=top_p, banned=banned, done=done, pad_id=99,
                             greedy_every=17)
    assert torch.equal(got, want), (case, (got != want).nonzero().flatten().tolist())
    live = ~done
    ref = torch.log_softmax(logits.float() / 0.7, -1).gather(1, got.clamp(max=4999)[:, None]).squeeze(1)
    assert torch.allclose(logp[live], ref[live], atol=1e-4) and bool((logp[done] == 0).all())


def test_diagnosis_shape_draws_lie_in_the_nucleus():
    from components.common.sampling_kernel import fused_sample

    rows, vocab, top_p = 1088, 152064, 0.9
    g = torch.Generator(device="cuda").manual_seed(0)
    logits = (torch.randn(rows, vocab, generator=g, device="cuda") * 2).bfloat16()
    banned = torch.zeros(vocab, dtype=torch.bool, device="cuda")
    banned[151643:] = True
    done = torch.zeros(rows, dtype=torch.bool, device="cuda")
    done[::5] = True
    tok = fused_sample(logits, temperature=0.7, top_p=top_p, seed=torch.tensor([3], device="cuda"),
                       suppress_mask=banned, done=done, pad_id=7, greedy_every=17)
    live = ~done & (torch.arange(rows, device="cuda") % 17 != 0)
    assert bool((tok[done] == 7).all()) and not banned[tok[~done]].any()
    s = (logits.float() / 0.7).masked_fill(banned, float("-inf"))
    p = s.softmax(-1)
    above = torch.where(s > s.gather(1, tok.clamp(max=vocab - 1)[:, None]), p, 0.0).sum(-1)
    assert bool((above[live] < top_p).all())  # every sampled token lies in its row's nucleus
    assert len(set(tok[live].tolist())) > 0.9 * int(live.sum())  # flat logits: draws spread over the vocabulary
    greedy = torch.arange(0, rows, 17, device="cuda")
    greedy = greedy[~done[greedy]]
    assert torch.equal(tok[greedy], s[greedy].argmax(-1))


def test_sampler_greedy_rows_equal_with_the_kernel_and_with_torch_ops(tiny_model_dir):
    from components.common.modeling import load_model_and_processor
    from components.common.sampling import (
        Prompt,
        SamplingConfig,
        TransformersBackend,
        shared_prefix_generate,
    )

    model, proc = load_model_and_processor(str(tiny_model_dir), device="cuda")
    be = TransformersBackend("", SamplingConfig(max_new_tokens=16), model, proc)
    prompts = [Prompt([{"role": "user", "content": [{"type": "text", "text": "Options: A. B." * (i + 1)}]}])
               for i in range(3)]
    enc = dict(be._encode(prompts))
    kw = {"n": 8, "greedy_row": True, "max_new_tokens": 16, "eos_ids": (), "pad_id": be.pad_id,
          "suppress_ids": be.suppress_ids, "cuda_graph": True, "logprobs": True}
    ops, ops_lp = shared_prefix_generate(model, dict(enc), fused_sampling=False, **kw)
    fused, fused_lp = shared_prefix_generate(model, dict(enc), fused_sampling=True, **kw)
    assert torch.equal(fused[:, 0], ops[:, 0])
    assert torch.allclose(fused_lp[:, 0], ops_lp[:, 0], atol=1e-3)
    assert not torch.isin(fused, torch.tensor(be.suppress_ids, device="cuda")).any()
