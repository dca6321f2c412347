"""The one place MedBridge opens a model: a Hugging Face id, a local directory or an S3 URI.

    from components.common.modeling import load_model_and_processor
    model, processor = load_model_and_processor("Qwen/Qwen2.5-VL-7B-Instruct")   # hub id (cluster with hub access)
    model, processor = load_model_and_processor("/models/qwen2.5-vl-7b")         # local checkpoint
    model, processor = load_model_and_processor("s3://models/medbridge/run-42/sft")  # S3 / MinIO prefix

The processor is Qwen2.5-VL's own processor restricted to images (`ImageQwenVLProcessor`): MedBridge feeds no
video, and the image-only form avoids the video processor's torchvision dependency on CPU-only images.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
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

    def __call__(self, images=None, text=None, **kwargs):
        """Qwen2.5-VL's processor; rows repeated within one call (GRPO hands it each prompt once per completion, the
        same image objects and text) are processed once and their outputs copied, which is what processing them
        again would give (tested), without preparing the same image G times on the CPU."""
        plan = _repeated_rows(images, text) if kwargs.get("return_tensors") == "pt" else None
        if plan is None:
            return super().__call__(images=images, text=text, **kwargs)
        uniq, index = plan
        rows = [images[u] if isinstance(images[u], list) else [images[u]] for u in uniq]
        out = super().__call__(images=rows, text=[text[u] for u in uniq], **kwargs)
        expanded = _expand_rows(out, index, [len(r) for r in rows])
        return expanded if expanded is not None else super().__call__(images=images, text=text, **kwargs)

    @contextlib.contextmanager
    def reusing_images(self, device=None):
        """Within the block, an image whose pixels this processor prepared before is not prepared again: its pixel
        rows and grid come from a memo keyed by the image's content (mode, size, SHA-1 of the pixels), equal to
        preparing it anew (tested). A GRPO step prepares its prompts' images three times (the rollout, CARE's
        reference, TRL's forward inputs; TRL hands the rollout deep copies). The memo is dropped when the outermost
        block ends.

        `device` (e.g. the trainer's GPU): the memo keeps each image's pixel rows there, moved once, and the block's
        torch outputs ("pt") carry their pixel values on it, so a prompt repeated for its G completions is laid out
        G times on the device instead of in host memory and copied over (numpy outputs come back to the host; grids
        and token ids stay on the host)."""
        outer = self._image_memo is None
        if outer:
            self._image_memo, self._image_device = {}, device
        try:
            yield self
        finally:
            if outer:
                self._image_memo, self._image_device = None, None

    _image_memo: dict | None = None  # (image digest, setting) -> (pixel rows, grid row) inside `reusing_images`
    _image_device = None  # where the memo keeps them

    def _process_images(self, images, **kwargs):
        """transformers' `_process_images` (images -> processor outputs and each image's placeholder text), with the
        images prepared before in a `reusing_images` block taken from its memo (kept as torch tensors, handed out as
        the call asks: torch for "pt", numpy otherwise, as the image processor itself does)."""
        from transformers.image_utils import make_flat_list_of_images

        from components.common.prompts import digest_once, is_pil_image

        want = kwargs.get("return_tensors")
        flat = make_flat_list_of_images(images) if self._image_memo is not None else []
        if not flat or want not in (None, "pt", "np") or not all(is_pil_image(img) for img in flat):
            return super()._process_images(images, **kwargs)
        import torch
        from transformers.feature_extraction_utils import BatchFeature

        setting = repr(sorted((k, v) for k, v in kwargs.items() if k != "return_tensors"))
        digest = digest_once()
        keys = [(digest(img), setting) for img in flat]
        todo = list({k: img for k, img in zip(keys, flat) if k not in self._image_memo}.items())
        if todo:
            fresh = self.image_processor([img for _, img in todo], **{**kwargs, "return_tensors": "pt"})
            if set(fresh) != {"pixel_values", "image_grid_thw"}:
                return super()._process_images(images, **kwargs)  # an output this memo does not know: as it comes
            grid, pixels = fresh["image_grid_thw"], fresh["pixel_values"]  # the grid stays on the host (small)
            if self._image_device is not None:
                pixels = pixels.to(self._image_device)
            for i, ((key, _), (a, b)) in enumerate(zip(todo, pixel_row_spans(grid, None, len(todo)))):
                self._image_memo[key] = (pixels[a:b], grid[i : i + 1])
        memo = [self._image_memo[k] for k in keys]
        out = {"pixel_values": torch.cat([m[0] for m in memo]), "image_grid_thw": torch.cat([m[1] for m in memo])}
        processed = BatchFeature(out if want == "pt" else {k: v.cpu().numpy() for k, v in out.items()})
        return processed, [self.replace_image_token(processed, image_idx=i, **kwargs) for i in range(len(flat))]

    def apply_chat_template(self, conversation, chat_template=None, **kwargs):
        """Qwen2.5-VL's chat template; a text rendering (`tokenize=False`) of a conversation rendered before comes
        from a small cache. The text depends on the messages' roles, texts and where images sit, not on the images
        themselves, and GRPO renders each prompt once per completion (256 renderings of 32 prompts per step)."""
        key = _template_key(self, conversation, chat_template, kwargs) if kwargs.get("tokenize") is False else None
        if key is None:
            return super().apply_chat_template(conversation, chat_template=chat_template, **kwargs)
        if key not in _RENDERED:
            _RENDERED[key] = super().apply_chat_template(conversation, chat_template=chat_template, **kwargs)
            if len(_RENDERED) > 4096:
                _RENDERED.popitem(last=False)
        _RENDERED.move_to_end(key)
        return _RENDERED[key]


_RENDERED: collections.OrderedDict = collections.OrderedDict()  # template key -> rendered text (least recent first)


def _template_key(processor, conversation, chat_template, kwargs):
    """A hashable key of one chat-template rendering (images stand as a marker), or None when the call holds
    anything else than plain data and images (tools, several conversations: rendered as they come)."""
    from components.common.prompts import frozen_messages

    one_conversation = isinstance(conversation, list) and conversation and isinstance(conversation[0], dict)
    if kwargs.get("tools") or not one_conversation:
        return None
    key = (id(processor), chat_template or processor.chat_template, frozen_messages(conversation, _image_marker),
           frozen_messages(kwargs, _image_marker))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _image_marker(img) -> tuple:
    return ("<image>",)


def image_starts(counts: list[int]) -> list[int]:
    """Index of each row's first image in `image_grid_thw` (and, last, the number of images)."""
    return list(itertools.accumulate(counts, initial=0))


def pixel_row_spans(image_grid_thw, num_images: list[int] | None, rows: int) -> list[tuple[int, int]]:
    """(start, end) of each row's patch rows in `pixel_values` (Qwen2-VL layout: one row per patch)."""
    per_image = [int(t) * int(h) * int(w) for t, h, w in image_grid_thw.tolist()]
    counts = num_images if num_images is not None else [1] * rows
    if len(counts) != rows or sum(counts) != len(per_image):
        raise ValueError(f"{len(per_image)} images do not match {rows} rows with num_images={counts}")
    spans, img, pos = [], 0, 0
    for c in counts:
        n = sum(per_image[img : img + c])
        spans.append((pos, pos + n))
        img, pos = img + c, pos + n
    return spans


_ROW_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids")


def _repeated_rows(images, text) -> tuple[list[int], list[int]] | None:
    """(first row of each distinct (images, text) row, each row's distinct index), or None when nothing repeats or
    the call is not one image list per text row. Images compare by identity: equal objects, not equal pixels."""
    if not isinstance(text, list) or not isinstance(images, list) or len(images) != len(text) or len(text) < 2:
        return None
    seen: dict = {}
    uniq, index = [], []
    for r, (imgs, t) in enumerate(zip(images, text)):
        key = (tuple(map(id, imgs)) if isinstance(imgs, list) else (id(imgs),), t)
        if key not in seen:
            seen[key] = len(uniq)
            uniq.append(r)
        index.append(seen[key])
    return (uniq, index) if len(uniq) < len(text) else None


def _expand_rows(out, index: list[int], images_per_row: list[int]):
    """The processor output of the distinct rows laid out for every row (None for an output it does not know)."""
    import torch

    if set(out) - {*_ROW_KEYS, "pixel_values", "image_grid_thw"}:
        return None
    grid = out.get("image_grid_thw")
    data = {k: out[k][torch.tensor(index)] for k in _ROW_KEYS if k in out}
    if grid is not None:
        first = image_starts(images_per_row)
        spans = pixel_row_spans(grid, images_per_row, len(images_per_row))
        data["image_grid_thw"] = torch.cat([grid[first[u] : first[u + 1]] for u in index])
        data["pixel_values"] = torch.cat([out["pixel_values"][spans[u][0] : spans[u][1]] for u in index])
    return type(out)(data)


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


def require_liger(enabled: bool, setting: str = "liger_kernels", *, on_cuda: bool | None = None) -> None:
    """Bad input found before any model loads: Liger's kernels asked for where the liger-kernel package is absent,
    or (`on_cuda=False`) where no CUDA GPU runs them."""
    import importlib.util

    if not enabled:
        return
    if on_cuda is False:
        raise ValueError(f"{setting}=True: Liger's kernels are Triton kernels for CUDA GPUs, and this run has none; "
                         f"set {setting}: false for CPU runs")
    if importlib.util.find_spec("liger_kernel") is None:
        raise ValueError(
            f"{setting}=True needs the liger-kernel package (pip install liger-kernel; GPUs only), which this "
            f"image lacks: set {setting}: false"
        )


def apply_liger_kernels(model) -> None:
    """Liger's fused Triton kernels in place of Qwen2.5-VL's RMSNorm, SwiGLU MLP and rotary embedding, for a model
    that samples or scores (transformers' own Liger integration, the one `use_liger_kernel` training runs, plus
    `liger_text_rope`; Liger's fused LM-head loss stays off: sampling needs the logits). Triton kernels: CUDA only.
    Note that the rotary function is swapped module-wide, as Liger's own entry point does."""
    from transformers.integrations.liger import apply_liger_kernel

    require_liger(True, on_cuda=next(model.parameters()).device.type == "cuda")
    apply_liger_kernel(model, {"fused_linear_cross_entropy": False, "cross_entropy": False})
    liger_text_rope()


def liger_text_rope() -> bool:
    """Route Qwen2.5-VL's text rotary embedding through Liger's rope kernel; whether it was routed.

    Liger's Qwen2.5-VL patch swaps `apply_multimodal_rotary_pos_emb`, which transformers 4 called with the rotary
    sections still split. transformers 5 merges the sections inside the rotary module and rotates q and k with the
    plain `apply_rotary_pos_emb` (cos/sin (batch, positions, head_dim)), which that patch never reaches; Liger's plain
    rope kernel (the one its Qwen2 patch uses, for inference and training) computes exactly that. Done module-wide,
    like Liger's own patches; a no-op where the attention does not call `apply_rotary_pos_emb`."""
    import inspect

    from liger_kernel.transformers.rope import liger_rotary_pos_emb
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as module

    try:
        calls = "apply_rotary_pos_emb(" in inspect.getsource(module.Qwen2_5_VLAttention.forward)
    except (OSError, TypeError, AttributeError):  # no source to read: leave the module as it is
        return False
    if calls:
        module.apply_rotary_pos_emb = liger_rotary_pos_emb
    return calls


def load_model_and_processor(
    ref: str,
    *,
    device: str | None = "auto",
    dtype: str = "auto",
    attn_implementation: str | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    liger_kernels: bool = False,
):
    """Open a Qwen2.5-VL-family checkpoint and its processor. `dtype` "auto" is bf16 on GPU, fp32 on CPU.

    `device=None` leaves the weights where loading put them: what training under DeepSpeed ZeRO-3 needs (the
    weights are partitioned over the ranks as they load; the trainer places everything else).
    `liger_kernels`: Liger's fused RMSNorm / SwiGLU / rotary kernels (`apply_liger_kernels`; GPU only) for a model
    that samples or scores; trainers apply them through TRL's `use_liger_kernel` and `liger_text_rope` instead."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from components.common.vision_attention import batch_window_attention

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
    batch_window_attention(model)  # one attention call per vision layer instead of one per window
    if device is not None:
        model = model.to(pick_device(device))
    model.eval()
    if liger_kernels:
        apply_liger_kernels(model)
    return model, load_processor(src, min_pixels=min_pixels, max_pixels=max_pixels)
