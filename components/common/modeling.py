"""The one place MedBridge opens a model: a Hugging Face id, a local directory or an S3 URI.

    from components.common.modeling import load_model_and_processor
    model, processor = load_model_and_processor("Qwen/Qwen2.5-VL-7B-Instruct")   # hub id (cluster with hub access)
    model, processor = load_model_and_processor("/models/qwen2.5-vl-7b")         # local checkpoint
    model, processor = load_model_and_processor("s3://models/medbridge/run-42/sft")  # S3 / MinIO prefix

The processor is Qwen2.5-VL's own processor restricted to images (`ImageQwenVLProcessor`): MedBridge feeds no
video, and the image-only form avoids the video processor's torchvision dependency on CPU-only images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import Qwen2_5_VLProcessor

class ImageQwenVLProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL processor for image + text inputs (no video processor)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        super(Qwen2_5_VLProcessor, self).__init__(image_processor, tokenizer, chat_template=chat_template, **kwargs)


def resolve_model_dir(ref: str, cache_dir: str | Path | None = None) -> str:
    """Turn a model reference into something `from_pretrained` opens.

    Local directories are returned as they are; `s3://bucket/prefix` is mirrored into the cache (boto3, honours
    AWS_ENDPOINT_URL for MinIO) and the local copy returned; anything else is taken as a Hugging Face hub id.
    """
    if not ref or not isinstance(ref, str):
        raise ValueError(f"model reference {ref!r} is empty: pass a hub id, a local directory or an s3:// URI")
    if ref.startswith("s3://"):
        from components.common.storage import cache_root, local_dir

        return str(local_dir(ref, Path(cache_dir or cache_root()) / "models", what="model"))
    path = Path(ref).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a model directory (no config.json); expected a save_pretrained output")
        return str(path)
    if ref.startswith(("/", "./", "../")) or ref.count("/") != 1:
        raise FileNotFoundError(f"model {ref!r}: no such directory, and not a hub id of the form 'org/name'")
    return ref


def load_processor(ref: str, *, min_pixels: int | None = None, max_pixels: int | None = None) -> ImageQwenVLProcessor:
    """Tokenizer + Qwen2-VL image processor (PIL backend) + chat template of a Qwen2.5-VL-family checkpoint."""
    from transformers import AutoTokenizer, Qwen2VLImageProcessorPil

    src = resolve_model_dir(ref)
    tokenizer = AutoTokenizer.from_pretrained(src)
    kwargs: dict[str, Any] = {}
    if min_pixels is not None:
        kwargs["min_pixels"] = min_pixels
    if max_pixels is not None:
        kwargs["max_pixels"] = max_pixels
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(src, **kwargs)
    if tokenizer.padding_side != "left":
        tokenizer.padding_side = "left"  # decoder-only generation pads on the left
    return ImageQwenVLProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template)


def pick_device(device: str = "auto") -> str:
    """"auto": this process's GPU (cuda:LOCAL_RANK under torchrun / accelerate launch, so the ranks of a
    multi-GPU run never all land on cuda:0), else the CPU."""
    if device != "auto":
        return device
    import os

    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"


def load_model_and_processor(
    ref: str,
    *,
    device: str | None = "auto",
    dtype: str = "auto",
    attn_implementation: str | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
):
    """Open a Qwen2.5-VL-family checkpoint and its processor. `dtype` "auto" is bf16 on GPU, fp32 on CPU.

    `device=None` leaves the weights where loading put them: what training under DeepSpeed ZeRO-3 needs (the
    weights are partitioned over the ranks as they load; the trainer places everything else)."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    src = resolve_model_dir(ref)
    on_gpu = torch.cuda.is_available() if device is None else pick_device(device).startswith("cuda")
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if on_gpu else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(src, **kwargs)
    if device is not None:
        model = model.to(pick_device(device))
    model.eval()
    return model, load_processor(src, min_pixels=min_pixels, max_pixels=max_pixels)
