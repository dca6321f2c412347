"""Sampling backends behind one interface: K sampled completions and one greedy completion per prompt.

    backend = make_backend(SamplingConfig(backend="transformers"), "path/or/hub-id")
    samples = backend.sample(prompts, n=16)     # list (per prompt) of 16 strings
    greedy  = backend.greedy(prompts)           # list of strings

A prompt is a `Prompt(messages, image)`: chat messages in the Qwen2.5-VL form plus an optional PIL image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

BACKENDS = ("transformers", "vllm")


@dataclass
class Prompt:
    messages: list[dict]
    image: Any | None = None  # PIL.Image


@dataclass
class SamplingConfig:
    backend: str = field(default="transformers", metadata={"help": "transformers (default, CPU/GPU) or vllm (production)"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature for Pass@K samples"})
    top_p: float = field(default=0.9, metadata={"help": "nucleus sampling top-p"})
    max_new_tokens: int = field(default=256, metadata={"help": "longest completion"})
    batch_size: int = field(default=8, metadata={"help": "prompts per forward batch"})
    seed: int = field(default=0, metadata={"help": "sampling seed"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:N"})

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r} is not known; choose one of {', '.join(BACKENDS)}")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be > 0 for sampling; Acc@1 uses greedy decoding")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} must be >= 1")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1")


class SamplingBackend(Protocol):
    def sample(self, prompts: list[Prompt], n: int) -> list[list[str]]: ...

    def greedy(self, prompts: list[Prompt]) -> list[str]: ...


class TransformersBackend:
    """Hugging Face `generate` on the loaded model; batched, with a progress bar."""

    def __init__(self, model_ref: str, cfg: SamplingConfig, model=None, processor=None):
        from components.common.modeling import load_model_and_processor

        self.cfg = cfg
        if model is None:
            model, processor = load_model_and_processor(model_ref, device=cfg.device)
        self.model, self.processor = model, processor
        tok = processor.tokenizer
        # Never emit vision/control placeholders as text: a random or weak model samples them otherwise.
        self.bad_words_ids = [
            [tok.convert_tokens_to_ids(t)]
            for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_start|>")
            if tok.convert_tokens_to_ids(t) is not None
        ]

    def _encode(self, prompts: list[Prompt]):
        texts = [
            self.processor.apply_chat_template(p.messages, add_generation_prompt=True, tokenize=False) for p in prompts
        ]
        images = [p.image for p in prompts if p.image is not None]
        if images and len(images) != len(prompts):
            raise ValueError("a batch mixes prompts with and without images; batch them separately")
        enc = self.processor(text=texts, images=images or None, return_tensors="pt", padding=True)
        return enc.to(self.model.device)

    def _generate(self, prompts: list[Prompt], n: int, do_sample: bool, desc: str) -> list[list[str]]:
        import torch
        from tqdm.auto import tqdm

        torch.manual_seed(self.cfg.seed)
        out: list[list[str]] = []
        bs = self.cfg.batch_size
        for start in tqdm(range(0, len(prompts), bs), desc=desc, unit="batch", disable=None):
            batch = prompts[start : start + bs]
            enc = self._encode(batch)
            gen_kwargs: dict[str, Any] = dict(
                max_new_tokens=self.cfg.max_new_tokens,
                do_sample=do_sample,
                num_return_sequences=n,
                bad_words_ids=self.bad_words_ids,
                pad_token_id=self.processor.tokenizer.pad_token_id,
            )
            if do_sample:
                gen_kwargs.update(temperature=self.cfg.temperature, top_p=self.cfg.top_p)
            with torch.inference_mode():
                seqs = self.model.generate(**enc, **gen_kwargs)
            texts = self.processor.batch_decode(seqs[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            out += [texts[i * n : (i + 1) * n] for i in range(len(batch))]
        return out

    def sample(self, prompts: list[Prompt], n: int) -> list[list[str]]:
        return self._generate(prompts, n, do_sample=True, desc=f"sampling K={n}")

    def greedy(self, prompts: list[Prompt]) -> list[str]:
        return [c[0] for c in self._generate(prompts, 1, do_sample=False, desc="greedy")]


def make_backend(cfg: SamplingConfig, model_ref: str) -> SamplingBackend:
    if cfg.backend == "transformers":
        return TransformersBackend(model_ref, cfg)
    raise NotImplementedError(f"backend={cfg.backend!r} is not wired yet")
