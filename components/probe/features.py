"""Pooled features from the frozen vision tower of a Qwen2.5-VL-family checkpoint, with an on-disk cache.

    ex = FeatureExtractor("Qwen/Qwen2.5-VL-7B-Instruct", image_size=224, pooling="mean", batch_size=64)
    feats = ex.extract(images)                  # (N, out_hidden_size) float32; N x H x W [x 3] uint8 input
    feats, labels, hit = cached_split_features(ex, cache_dir, npz, "pneumoniamnist", "train", images, labels)

Images go through the checkpoint's own image processor at a fixed `image_size` (resized to a square first, so every
image has the same patch grid), then through the tower only (`model.model.visual`): bf16 on GPU, fp32 on CPU,
`torch.inference_mode`. The merged visual tokens of each image are mean- (or max-) pooled. When every image shares
one grid, `components.probe.fast_tower` runs the tower as a few large batched calls (torch.compile'd on CUDA);
otherwise the stock HF tower call is used.

Cache: one directory per (checkpoint fingerprint, npz sha256, flag, split, pooling, image_size, dtype, subset) under
`cache_dir/<flag>/<key>/` holding `features.npy`, `labels.npy`, `meta.json` and `lineage.json`, written atomically.
The same checkpoint and data coming again (base, SFT or RL checkpoints each have their own fingerprint) reuse it
without loading the model.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from components.common.io import atomic_dir, sha256_file, write_json

FEATURE_VERSION = 1  # bump when the extraction changes what the numbers mean
_WEIGHT_GLOBS = ("config.json", "preprocessor_config.json", "*.safetensors", "*.bin", "*.pt")


@lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, memoised per (path, size, mtime) within the process."""
    st = Path(path).stat()
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)


def _dir_fingerprint(d: Path) -> str:
    from components.common.lineage import read_lineage

    files = sorted({p for g in _WEIGHT_GLOBS for p in d.glob(g) if p.is_file()})
    if not files:
        raise FileNotFoundError(f"{d}: no config.json or weight files to fingerprint")
    lin = read_lineage(d)
    if lin and lin.get("sha256"):
        # A MedBridge artifact: its content hash is already recorded; the files' sizes and modification times guard
        # against weights changed after it was written (a full re-hash of a 7B checkpoint costs ~a minute).
        stamp = ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
        return f"lineage:{lin['sha256']}:{hashlib.sha256(stamp.encode()).hexdigest()[:16]}"
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode() + b"\0" + file_sha256(p).encode() + b"\n")
    return f"files:{h.hexdigest()}"


def model_fingerprint(model_ref: str) -> str:
    """What identifies the checkpoint's weights + image preprocessing: its lineage hash, a hash of its config,
    preprocessor config and weight files, or for a hub id the cached snapshot's commit."""
    from components.common.modeling import resolve_model_dir

    src = resolve_model_dir(model_ref)  # local dirs as they are; s3:// mirrored locally; else a hub id
    if Path(src).is_dir():
        return _dir_fingerprint(Path(src))
    try:
        from huggingface_hub import snapshot_download

        snap = Path(snapshot_download(src, local_files_only=True))
        return f"hub:{src}@{snap.name}"
    except Exception:
        return f"hub:{src}"  # revision unknown until downloaded: keyed on the id alone


def cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def to_pil_rgb(img: np.ndarray, size: int):
    from PIL import Image

    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    return Image.fromarray(img).convert("RGB").resize((size, size), Image.BICUBIC)


def preprocess(image_processor, images: np.ndarray, size: int):
    """(pixel_values, image_grid_thw) for a batch, through the checkpoint's image processor at size x size."""
    pil = [to_pil_rgb(im, size) for im in images]
    out = image_processor(images=pil, return_tensors="pt", size={"shortest_edge": size * size, "longest_edge": size * size})
    grid = out["image_grid_thw"]
    want = size // int(image_processor.patch_size)
    if not bool((grid[:, 1:] == want).all()):
        raise RuntimeError(f"image processor produced grids {grid[:1].tolist()} for {size}px images, expected [1, {want}, {want}]")
    return out["pixel_values"], grid


class _Batches:
    """Map-style dataset of preprocessed batches (a DataLoader with workers parallelises the image processor)."""

    def __init__(self, images: np.ndarray, batch_size: int, image_processor, size: int):
        self.images, self.bs, self.ip, self.size = images, batch_size, image_processor, size

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.bs)

    def __getitem__(self, i: int):
        return preprocess(self.ip, self.images[i * self.bs : (i + 1) * self.bs], self.size)


def get_visual(model):
    """The vision tower of a Qwen2.5-VL model: `model.model.visual` (transformers 5.x) or `model.visual` (4.x)."""
    inner = getattr(model, "model", None)
    visual = getattr(inner, "visual", None) or getattr(model, "visual", None)
    if visual is None:
        raise TypeError(f"{type(model).__name__} has no vision tower (.model.visual / .visual): not a Qwen2.5-VL model")
    return visual


class FeatureExtractor:
    """Lazily opens the checkpoint on first use, so a fully cached run never loads the model."""

    def __init__(
        self,
        model_ref: str,
        *,
        image_size: int = 224,
        pooling: str = "mean",
        batch_size: int = 64,
        device: str = "auto",
        fast_tower: bool = True,
        compile: bool = True,
        num_workers: int = -1,
    ):
        if pooling not in ("mean", "max"):
            raise ValueError(f"pooling={pooling!r} is not known; choose 'mean' or 'max'")
        self.model_ref, self.image_size, self.pooling = model_ref, image_size, pooling
        self.batch_size, self.device_req, self.fast_tower = batch_size, device, fast_tower
        self.compile, self.num_workers = compile, num_workers
        self.visual = None
        self.image_processor = None
        self.forward_calls = 0  # tower forwards run (tests use it to prove cache hits run nothing)
        self.path_used: str | None = None  # "fast" or "hf", once a batch has run
        self._plan = None

    @property
    def device(self) -> str:
        from components.common.modeling import pick_device

        return pick_device(self.device_req)

    @property
    def dtype_name(self) -> str:
        return "bfloat16" if self.device.startswith("cuda") else "float32"

    def load(self) -> None:
        if self.visual is not None:
            return
        from components.common.modeling import load_model_and_processor

        model, processor = load_model_and_processor(self.model_ref, device=self.device)
        self.visual = get_visual(model).eval()
        self.visual.requires_grad_(False)
        self.image_processor = processor.image_processor
        del model  # only the tower stays referenced; the language model is freed

    def extract(self, images: np.ndarray, desc: str = "features") -> np.ndarray:
        import torch
        from torch.utils.data import DataLoader
        from tqdm.auto import tqdm

        from components.probe.fast_tower import (
            fast_pooled_features,
            hf_pooled_features,
            make_plan,
        )

        self.load()
        visual, dev = self.visual, torch.device(self.device)
        cuda = dev.type == "cuda"
        workers = self.num_workers
        if workers < 0:  # auto: the image processor (~100 img/s per core) must keep up with the GPU tower
            workers = min(16, max(0, (os.cpu_count() or 1) - 1)) if cuda else 0
        loader = DataLoader(
            _Batches(images, self.batch_size, self.image_processor, self.image_size),
            batch_size=None,
            num_workers=workers,
            pin_memory=cuda,
        )
        out: list[np.ndarray] = []
        with torch.inference_mode():
            for px, thw in tqdm(loader, desc=desc, unit="batch", disable=None):
                n = thw.shape[0]
                px = px.to(dev, non_blocking=True)
                if self.fast_tower and self._plan is None:
                    self._plan = make_plan(visual, int(thw[0, 1]), int(thw[0, 2]), device=dev)
                if self._plan is not None:
                    use_compile = self.compile and cuda
                    if use_compile and n < self.batch_size:  # pad: one compiled shape for every batch
                        px = torch.cat([px, px.new_zeros(((self.batch_size - n) * self._plan.seq_len, px.shape[1]))])
                    feats = fast_pooled_features(visual, px, self._plan, self.pooling, compile=use_compile)[:n]
                    self.path_used = "fast"
                else:
                    feats = hf_pooled_features(visual, px, thw.to(dev), self.pooling)
                    self.path_used = "hf"
                self.forward_calls += 1
                out.append(feats.float().cpu().numpy())
        dim = int(getattr(visual.config, "out_hidden_size", 0) or 0)
        return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


def subset_indices(n: int, cap: int, seed: int, split: str) -> np.ndarray:
    """Sorted seeded random subset of `cap` indices out of n (all of them when cap is 0 or >= n)."""
    if not cap or cap >= n:
        return np.arange(n)
    rng = np.random.default_rng([seed, ("train", "val", "test").index(split)])
    return np.sort(rng.choice(n, size=cap, replace=False))


def cached_split_features(
    extractor: FeatureExtractor,
    cache_dir: str | Path,
    npz: str | Path,
    flag: str,
    split: str,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    model_fp: str | None = None,
    subset: dict[str, int] | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Features + labels of one split, from the cache when this checkpoint already saw this data.

    Returns (features, labels, info) where info = {"key", "path", "cache_hit"}."""
    parts = {
        "version": FEATURE_VERSION,
        "model": model_fp or model_fingerprint(extractor.model_ref),
        "data_sha256": file_sha256(npz),
        "flag": flag,
        "split": split,
        "pooling": extractor.pooling,
        "image_size": extractor.image_size,
        "dtype": extractor.dtype_name,
        "subset": subset or {},
        "n": int(len(images)),
    }
    key = cache_key(parts)
    entry = Path(cache_dir) / flag / key[:24]
    meta_f = entry / "meta.json"
    if meta_f.is_file():
        try:
            meta = json.loads(meta_f.read_text())
            if meta.get("key") == key:
                feats = np.load(entry / "features.npy")
                if feats.shape[0] == len(images):
                    return feats, np.load(entry / "labels.npy"), {"key": key, "path": str(entry), "cache_hit": True}
        except (OSError, ValueError):
            pass  # unreadable entry: recompute and replace it
    feats = extractor.extract(images, desc=f"{flag}/{split} features")
    from components.common.lineage import write_lineage
    from components.common.schema import stamp

    with atomic_dir(entry) as tmp:
        np.save(tmp / "features.npy", feats.astype(np.float32))
        np.save(tmp / "labels.npy", labels)
        write_json(tmp / "meta.json", stamp({"key": key, **parts, "shape": list(feats.shape), "path_used": extractor.path_used,
                                       "model_ref": extractor.model_ref}, "probe_features"))
        write_lineage(tmp, step="probe", artifact="probe_features", inputs={"medmnist_npz": str(npz)}, params=parts,
                      summary=f"{extractor.pooling}-pooled vision-tower features of {flag}/{split}: {feats.shape}")
    return feats, labels, {"key": key, "path": str(entry), "cache_hit": False}
