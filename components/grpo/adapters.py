"""LoRA adapters in the base model's dtype for the passes that take no gradient (rollout, CARE's reference).

    with adapters_in_compute_dtype(model):      # under torch.no_grad()
        ...sample or score...

PEFT keeps LoRA adapters in fp32 beside a bf16 base model (so that Adam's small updates are not rounded away), and
every adapter call then casts its input to fp32, runs two fp32 matmuls (no tensor cores) and casts back: 7 adapted
projections x 28 layers per decode step of a 7B model. The rollout and CARE's reference only read the adapters, so
for their duration the adapters' weights are swapped for copies in the base weights' dtype (what a vLLM rollout
engine, which serves merged bf16 weights, computes with too) and the fp32 weights are put back unchanged afterwards:
training and the optimizer never see the copies.
"""

from __future__ import annotations

from contextlib import contextmanager


def _adapter_weights(model) -> list:
    """The weights of every LoRA A/B projection of `model` (a PEFT model or the base model it wraps)."""
    out = []
    for m in model.modules():
        for name in ("lora_A", "lora_B"):
            for lin in (getattr(m, name, None) or {}).values():
                if getattr(lin, "weight", None) is not None:
                    out.append(lin.weight)
    return out


def compute_dtype(model):
    """The dtype the base model computes in (its input embeddings')."""
    return model.get_input_embeddings().weight.dtype


@contextmanager
def adapters_in_compute_dtype(model):
    """For the block's duration, every LoRA adapter weight of `model` held in the base model's dtype; yields how many
    were swapped (0: not a LoRA model, or adapters already in that dtype). Only without gradients: a backward through
    the copies would never reach the real weights."""
    import torch

    if torch.is_grad_enabled():
        raise RuntimeError("adapters_in_compute_dtype is for passes without gradients: wrap them in torch.no_grad()")
    dtype = compute_dtype(model)
    swapped = [(w, w.data) for w in _adapter_weights(model) if w.dtype != dtype and w.data.numel()]
    try:
        for w, data in swapped:
            w.data = data.to(dtype)
        yield len(swapped)
    finally:
        for w, data in swapped:
            w.data = data


@contextmanager
def adapter_inputs_uncast(model, device_type: str):
    """Under autocast: PEFT's LoRA layers pass their (bf16) input on as it is instead of casting it to the fp32
    adapters' dtype first. Autocast casts it straight back to bf16 for the matmul, so the numbers are the same (bf16 ->
    fp32 -> bf16 is exact); what goes is two copies of the activations per adapter call, and the bf16 copy autocast
    would keep for the backward. Outside autocast it changes nothing (the fp32 adapters need the cast there)."""
    import torch
    from peft.helpers import disable_input_dtype_casting

    with disable_input_dtype_casting(model, active=torch.is_autocast_enabled(device_type)):
        yield
