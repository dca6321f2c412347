"""One decode step's sampling at the diagnosis shape: torch ops (`sample_next` plus the greedy row, finished rows and
log-probabilities around it, as `shared_prefix_generate` runs them) against the fused kernel
(`components/common/sampling_kernel.py`), device time per step; and the kernel's block size and warps.

    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 benchmarks/sampling_kernel.py [--rows 1088] [--vocab 152064] [--logprobs]

Logits are random bf16 (scale 2, so that the 0.9 nucleus holds a large part of the vocabulary, as a random-weight
model's do), temperature 0.7, top-p 0.9, the vision tokens suppressed, one greedy row per 17. The figures say how
long sampling takes, nothing about a model's answers. Needs a CUDA GPU with Triton.
"""

from __future__ import annotations

import argparse
import json


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1088, help="rows decoded together (64 questions x (16 + greedy))")
    p.add_argument("--vocab", type=int, default=152064)
    p.add_argument("--logprobs", action="store_true", help="also the chosen tokens' log-probabilities (GRPO rollouts)")
    p.add_argument("--json", default="", help="also write the figures here")
    a = p.parse_args(argv)

    import torch

    from benchmarks.sampling import _cuda_ms
    from components.common import sampling_kernel
    from components.common.sampling import sample_next

    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    logits = (torch.randn(a.rows, a.vocab, generator=g, device=dev) * 2).bfloat16()
    suppress = torch.arange(151643, a.vocab, device=dev) if a.vocab > 151643 else torch.tensor([0], device=dev)
    banned = torch.zeros(a.vocab, dtype=torch.uint8, device=dev)
    banned[suppress] = 1
    is_greedy = torch.arange(a.rows, device=dev) % 17 == 0
    done = torch.zeros(a.rows, dtype=torch.bool, device=dev)
    pad = torch.zeros(a.rows, dtype=torch.long, device=dev)
    seed = torch.tensor([5], device=dev)

    def torch_ops():  # the loop body of shared_prefix_generate without the kernel
        x = logits.float()
        if a.logprobs:
            scaled = torch.log_softmax(x / 0.7, dim=-1)
        x[:, suppress] = float("-inf")
        tok = sample_next(x, temperature=0.7, top_p=0.9, generator=g)
        tok = torch.where(is_greedy, x.argmax(-1), tok)
        tok = torch.where(done, pad, tok)
        if a.logprobs:
            scaled.gather(1, tok[:, None])
        return tok

    def fused():
        return sampling_kernel.fused_sample(logits, temperature=0.7, top_p=0.9, seed=seed, suppress_mask=banned,
                                            done=done, greedy_every=17, logprobs=a.logprobs)

    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": a.rows, "vocab": a.vocab,
           "logprobs": a.logprobs, "torch_ops_ms": _cuda_ms(torch_ops, reps=20), "fused_ms": {}}
    print(f"{res['device']}: {a.rows} rows x {a.vocab} logits (bf16), top-p 0.9, T 0.7"
          f"{', log-probabilities' if a.logprobs else ''}", flush=True)
    print(f"  torch ops (sample_next + greedy row + finished rows): {res['torch_ops_ms']:.2f} ms per step", flush=True)
    read = logits.numel() * logits.element_size()
    chosen = (sampling_kernel.BLOCK, sampling_kernel.NUM_WARPS)
    for block, warps in ((512, 4), (1024, 4), (1024, 8), (2048, 8), (2048, 16)):
        sampling_kernel.BLOCK, sampling_kernel.NUM_WARPS = block, warps
        ms = _cuda_ms(fused, reps=20)
        res["fused_ms"][f"{block}x{warps}"] = ms
        print(f"  fused kernel, {block} lanes, {warps} warps{' (the default)' if (block, warps) == chosen else ''}: "
              f"{ms:.3f} ms per step ({read / ms / 1e6:.0f} GB/s of bf16 logits read once)", flush=True)
    sampling_kernel.BLOCK, sampling_kernel.NUM_WARPS = chosen
    print(json.dumps(res))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
