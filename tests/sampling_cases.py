"""Inputs and the reference draw shared by the CPU and GPU tests of the fused sampling kernel
(`components/common/sampling_kernel.py`): logits of several shapes, uniforms, and what the kernel must draw from them,
computed from the definition with the nucleus built explicitly."""

from __future__ import annotations

# (what the case exercises, logit scale, bf16-rounded logits, top_p)
CASES = [
    ("flat logits: the nucleus is most of the vocabulary, many winners rejected", 0.5, False, 0.9),
    ("peaked logits: a nucleus of a few tokens", 6.0, False, 0.9),
    ("bf16-rounded logits: ties at the nucleus edge (all tied tokens kept)", 2.0, True, 0.7),
    ("top_p 0.3: most first winners lie outside", 1.0, False, 0.3),
    ("top_p 1: no nucleus check", 1.0, False, 1.0),
]


def sampling_case(scale: float, quantise: bool, rows: int, vocab: int, device="cpu", seed: int = 7):
    """logits (rows, vocab), uniforms in (0, 1), a suppression mask (3 tokens) and finished rows (rows 5 and 6)."""
    import torch

    g = torch.Generator(device=device).manual_seed(seed)
    logits = torch.randn(rows, vocab, generator=g, device=device) * scale
    if quantise:
        logits = logits.bfloat16().float()
    uniforms = torch.rand(rows, vocab, generator=g, device=device).clamp_min(1e-12)
    banned = torch.zeros(vocab, dtype=torch.bool, device=device)
    banned[[3, 10, vocab - 1]] = True
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    done[[5, 6]] = True
    return logits, uniforms, banned, done


def reference_draw(logits, uniforms, *, temperature: float, top_p: float, banned, done, pad_id: int,
                   greedy_every: int):
    """The definition, row by row: suppressed tokens removed; the nucleus = the tokens whose strictly more probable
    tokens hold < top_p of the probability (built explicitly: mass above every token); the draw = the argmax of
    logit / T - log(-log u) over the nucleus; rows 0, k, 2k, ... (k = greedy_every) the argmax logit instead; finished
    rows `pad_id`. Also the first (unrestricted) race winners, to check that the rejection path ran."""
    import torch

    s = (logits.float() * (1.0 / temperature)).masked_fill(banned, float("-inf"))
    race = s - torch.log(-torch.log(uniforms.float()))
    out = []
    for r in range(len(s)):
        p = torch.softmax(s[r].double(), -1)
        above = (p[None, :] * (s[r][None, :] > s[r][:, None])).sum(-1)  # mass strictly above each token
        keep = above < top_p if top_p < 1.0 else torch.ones_like(p, dtype=torch.bool)
        out.append(torch.where(keep, race[r], float("-inf")).argmax())
    tok = torch.stack(out)
    if greedy_every:
        rows = torch.arange(len(tok), device=tok.device)
        tok = torch.where(rows % greedy_every == 0, logits.float().masked_fill(banned, float("-inf")).argmax(-1), tok)
    tok = torch.where(done, torch.full_like(tok, pad_id), tok)
    return tok, race.argmax(-1)
