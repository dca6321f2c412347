"""LoRA adapters in the base model's dtype for the passes that take no gradient (rollout, CARE's reference), and
CARE's EMA reference kept as adapters on the policy's own base weights.

    with adapters_in_compute_dtype(model):      # under torch.no_grad()
        ...sample or score...
    with adapters_merged(model):                # under torch.no_grad(): W + scale·B·A in one bf16 weight
        ...sample...
    ema = AdapterEMA(policy)                     # fp32 copies of the policy's adapters
    ema.update(policy, alpha)                    # ema <- (1 - alpha) ema + alpha policy
    with ema.applied(policy):                    # under torch.no_grad(): the policy computes as the EMA reference
        ...score...

PEFT keeps LoRA adapters in fp32 beside a bf16 base model (so that Adam's small updates are not rounded away), and
every adapter call then casts its input to fp32, runs two fp32 matmuls (no tensor cores) and casts back: 7 adapted
projections x 28 layers per decode step of a 7B model. The rollout and CARE's reference only read the adapters, so
for their duration the adapters' weights are swapped for copies in the base weights' dtype (what a vLLM rollout
engine, which serves merged bf16 weights, computes with too) and the fp32 weights are put back unchanged afterwards:
training and the optimizer never see the copies.

With LoRA the base weights are frozen, so an EMA of the policy differs from it only in the adapters: `AdapterEMA`
keeps fp32 copies of those (~0.5 % of a 7B model) instead of a second copy of the whole model, and scores by swapping
them into the policy for the duration of the reference pass (in eval mode). Its parameters are what the step's
checkpoint stores as the EMA reference.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


def _adapter_weights(model) -> dict:
    """{name: weight} of every LoRA A/B projection of `model` (a PEFT model or the base model it wraps)."""
    out = {}
    for prefix, m in model.named_modules():
        for part in ("lora_A", "lora_B"):
            for adapter, lin in (getattr(m, part, None) or {}).items():
                if getattr(lin, "weight", None) is not None:
                    out[f"{prefix}.{part}.{adapter}.weight"] = lin.weight
    return out


def compute_dtype(model):
    """The dtype the base model computes in (its input embeddings')."""
    return model.get_input_embeddings().weight.dtype


@contextmanager
def adapters_in_compute_dtype(model):
    """For the block's duration, every LoRA adapter weight of `model` held in the base model's dtype; yields how many
    were swapped (0: not a LoRA model, or adapters already in that dtype). Only without gradients: a backward through
    the copies would never reach the real weights."""
    if torch.is_grad_enabled():
        raise RuntimeError("adapters_in_compute_dtype is for passes without gradients: wrap them in torch.no_grad()")
    weights = list(_adapter_weights(model).values())  # none: a full-weight model (or a DeepSpeed engine around one)
    dtype = compute_dtype(model) if weights else None
    saved = [(w, w.data) for w in weights if w.dtype != dtype and w.data.numel()]
    try:
        for w, data in saved:
            w.data = data.to(dtype)
        yield len(saved)
    finally:
        for w, data in saved:
            w.data = data


def _mergeable(layer) -> bool:
    """A plain LoRA `Linear` over a float `nn.Linear`, whose active adapters are vanilla LoRA without a bias (DoRA and
    other variants, LoRA biases and quantised base layers keep computing the adapters beside the base weights)."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    if type(layer) is not LoraLinear or layer.merged or layer.disable_adapters:
        return False
    base = layer.get_base_layer()
    if type(base) is not torch.nn.Linear or not base.weight.dtype.is_floating_point:
        return False
    active = [a for a in layer.active_adapters if a in layer.lora_A]
    return bool(active) and not any(a in layer.lora_variant or layer.lora_bias.get(a) for a in active)


@contextmanager
def adapters_merged(model):
    """For the block's duration (no gradients), every mergeable LoRA layer of `model` computes with one weight,
    W + scale·B·A rounded once to W's dtype, instead of the base projection plus two adapter matmuls: what a serving
    engine (vLLM, TRL's weight sync to it) computes with. The merge goes into a fresh copy of W, so the frozen base
    weights are put back bit for bit afterwards, with no drift from merging and unmerging in bf16. Yields how many
    layers were merged; layers PEFT cannot merge exactly (`_mergeable`) keep their adapters. Costs a copy of the
    merged weights while it lasts (~13 GB for a 7B model's language projections)."""
    if torch.is_grad_enabled():
        raise RuntimeError("adapters_merged is for passes without gradients: wrap them in torch.no_grad()")
    layers = [m for m in model.modules() if hasattr(m, "lora_A") and _mergeable(m)]
    saved = []
    try:
        for layer in layers:
            weight = layer.get_base_layer().weight
            saved.append((layer, weight, weight.data))
            weight.data = weight.data.clone()
            layer.merge()  # PEFT's own merge (fp32 delta added into the copy), marks the layer merged
        yield len(saved)
    finally:
        for layer, weight, data in saved:
            weight.data = data
            layer.merged_adapters.clear()


def merged_unless_sharded(trainer, model):
    """`adapters_merged(model)` for a trainer whose weights are whole on each process; under DeepSpeed or FSDP
    (sharded, or gathered only for the pass) nothing is merged and the adapters run as they are."""
    import contextlib

    sharded = trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled
    return contextlib.nullcontext(0) if sharded else adapters_merged(model)


@contextmanager
def adapter_inputs_uncast(model, device_type: str):
    """Under autocast: PEFT's LoRA layers pass their (bf16) input on as it is instead of casting it to the fp32
    adapters' dtype first. Autocast casts it straight back to bf16 for the matmul, so the numbers are the same (bf16 ->
    fp32 -> bf16 is exact); what goes is two copies of the activations per adapter call, and the bf16 copy autocast
    would keep for the backward. Outside autocast it changes nothing (the fp32 adapters need the cast there)."""
    from peft.helpers import disable_input_dtype_casting

    with disable_input_dtype_casting(model, active=torch.is_autocast_enabled(device_type)):
        yield


class AdapterEMA(torch.nn.Module):
    """An exponential moving average of a LoRA policy's adapters (fp32), applied to the policy's own base weights.

    Its parameters (frozen) are named after the policy's adapter weights ('.' written '__'), one per LoRA A/B weight."""

    def __init__(self, policy):
        super().__init__()
        self.weights = torch.nn.ParameterDict({
            name.replace(".", "__"): torch.nn.Parameter(w.detach().float().clone(), requires_grad=False)
            for name, w in _adapter_weights(policy).items()
        })
        if not self.weights:
            raise ValueError("AdapterEMA needs a LoRA model: the policy has no lora_A / lora_B weights")

    def _pairs(self, policy):
        live = _adapter_weights(policy)
        missing = [k.replace("__", ".") for k in self.weights if k.replace("__", ".") not in live]
        if missing:
            raise ValueError(f"the policy lacks the EMA's adapter weights {missing[:3]} (a different model?)")
        return [(self.weights[k], live[k.replace("__", ".")]) for k in self.weights]

    @torch.no_grad()
    def update(self, policy, alpha: float) -> None:
        """ema <- (1 - alpha) ema + alpha policy (TRL's SyncRefModelCallback update, on the adapters)."""
        for ema, live in self._pairs(policy):
            ema.mul_(1.0 - alpha).add_(live.detach().to(ema.dtype), alpha=alpha)

    @contextmanager
    def applied(self, policy):
        """For the block's duration (no gradients) the policy's adapters hold the EMA's values in the base model's
        dtype and the policy is in eval mode: the policy computes as the EMA reference. Everything is put back."""
        if torch.is_grad_enabled():
            raise RuntimeError("AdapterEMA.applied is for passes without gradients: wrap them in torch.no_grad()")
        dtype = compute_dtype(policy)
        pairs = self._pairs(policy)
        saved = [(live, live.data) for _, live in pairs]
        training = policy.training
        try:
            for ema, live in pairs:
                live.data = ema.detach().to(device=live.device, dtype=dtype)
            policy.eval()
            yield policy
        finally:
            for live, data in saved:
                live.data = data
            policy.train(training)
