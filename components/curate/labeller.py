"""Modality labeller: a VLM puts each PMC-VQA question in one imaging category, by constrained choice.

    labeller = ModalityLabeller("Qwen/Qwen2.5-VL-32B-Instruct")          # production (the paper's labeller)
    cache = LabelCache("~/.cache/medbridge/curate/modality_labels.jsonl")
    labels = label_modalities(records, image_root, labeller, cache)     # {record id: LabelEntry}

Constrained choice: rather than parse free text, the labeller scores each of the eight categories (MRI, CT,
ultrasound, X-ray, microscopy, dermatology, OCT, none) as the assistant's complete answer - the sum of the
log-probabilities of its tokens followed by the end-of-turn token, given the image and the prompt - and takes the
best. The label is therefore always one of the eight.

Two scoring paths give the same scores (tested on CPU against each other):
- fast (default): questions are sorted by prompt length (image tokens included) and cut into batches of about
  `token_budget` tokens; a few threads decode and preprocess the next batches while the GPU scores the current
  one; ONE forward per batch scores the prompts and all eight candidates together (`components.curate.scoring`).
- stock (`fast=False`): batches of `batch_size` questions in record order; a prompt forward, its KV cache repeated
  for the candidates, a second, batched candidate forward.
The fast path's options: `compile=True` runs its vision block and decoder layer through torch.compile;
`liger_kernels=True` (CUDA GPUs with the liger-kernel package; refused elsewhere before any model loads) runs its
RMSNorms, SiLU-mul and rotary embeddings through Liger's Triton kernels (same formulas, other rounding: bf16 scores
move within kernel tolerance). Neither changes the stock path.

Results are cached in a JSON-lines file keyed by (image sha256, question sha256, labeller model reference, prompt
version). Every batch is appended and flushed to disk as soon as it is scored, so an interrupted run loses at
most one batch, and a rerun labels only what is missing. The model is opened only if something is missing.

Sharded labelling (several GPUs or pods, `python -m components.curate.label --label-shard I --label-num-shards N`):
shard I labels the questions whose cache key falls in I of N (a fixed function of the key) and appends to its own
file beside the cache, `<cache stem>.shard-0000I-of-0000N.jsonl`. A `LabelCache` reads the main file and every
shard file beside it and merges them deterministically (`merge_labels`): the result does not depend on the order
of files or lines, duplicates keep one canonical entry, and two different labels for one key are reported as a
conflict.
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components.common.io import atomic_write_text, sha256_file, share
from components.common.records import MODALITIES, MCQRecord

log = logging.getLogger(__name__)

PROMPT_VERSION = "modality-v1"
PROMPT = (
    "Which imaging modality produced this medical image? The question asked about it is:\n"
    "\"{question}\"\n"
    "Answer with exactly one of: MRI, CT, ultrasound, X-ray, microscopy, dermatology, OCT, none. "
    "Answer none when the modality is uncommon, ambiguous or unspecified, or the figure is not a medical image."
)
DEFAULT_TOKEN_BUDGET = 16384


@dataclass
class LabelEntry:
    key: str
    image_sha256: str
    question_sha256: str
    model: str
    prompt_version: str
    label: str
    scores: dict[str, float]  # log-likelihood of each candidate answer
    created_at: str = ""


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cache_key(image_sha256: str, question_sha256: str, model: str, prompt_version: str) -> str:
    return _sha("\0".join((image_sha256, question_sha256, model, prompt_version)))


# --------------------------------------------------------------------------------------------------------------
# The cache, its shards and their deterministic merge
# --------------------------------------------------------------------------------------------------------------


def shard_of(key: str, num_shards: int) -> int:
    """The shard (0 <= s < num_shards) a cache key belongs to: a fixed function of the key, so every pod, run and
    record order agrees, and repeated questions land on the same shard."""
    return int(key[:16], 16) % num_shards


def check_shard(shard: int, num_shards: int) -> None:
    if num_shards < 1:
        raise ValueError(f"label_num_shards={num_shards} must be >= 1 (--label-num-shards)")
    if not 0 <= shard < num_shards:
        raise ValueError(f"label_shard={shard} must be in [0, {num_shards}) for {num_shards} shards (--label-shard)")


def shard_path(cache_path: str | Path, shard: int, num_shards: int) -> Path:
    """The file shard `shard` of `num_shards` appends to, beside the main cache file."""
    p = Path(cache_path).expanduser()
    return p.with_name(f"{p.stem}.shard-{shard:05d}-of-{num_shards:05d}{p.suffix}")


def shard_files(cache_path: str | Path) -> list[Path]:
    """Every shard file beside the main cache file (any shard count), sorted by name."""
    p = Path(cache_path).expanduser()
    if not p.parent.is_dir():
        return []
    return sorted(p.parent.glob(f"{p.stem}.shard-*-of-*{p.suffix}"))


def read_label_file(path: str | Path) -> list[LabelEntry]:
    """The entries of one JSON-lines label file; a torn line (an interrupted write) is skipped: that item is
    labelled again."""
    out = []
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
                out.append(LabelEntry(**row))
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return out


def _canonical(e: LabelEntry) -> tuple[str, str]:
    body = {k: v for k, v in asdict(e).items() if k != "created_at"}
    return json.dumps(body, sort_keys=True), e.created_at


@dataclass
class MergedLabels:
    entries: dict[str, LabelEntry]
    duplicates: int = 0  # entries beyond the first for a key, with the same label
    conflicts: list[dict[str, Any]] = field(default_factory=list)  # {"key", "labels": {label: [files]}, "kept"}


def merge_labels(sources: Iterable[tuple[str, list[LabelEntry]]]) -> MergedLabels:
    """Merge label entries from named sources (file names) into one entry per key, independently of the order of
    sources and entries: of several entries for a key the canonical one is kept (the smallest by its JSON without
    the timestamp, then the timestamp); a key labelled differently by different entries is a conflict, reported
    with the labels and the sources that hold each (the kept entry is chosen by the same rule)."""
    groups: dict[str, list[tuple[str, LabelEntry]]] = {}
    for name, entries in sources:
        for e in entries:
            groups.setdefault(e.key, []).append((name, e))
    merged = MergedLabels(entries={})
    for key in sorted(groups):
        group = groups[key]
        kept = min((e for _, e in group), key=_canonical)
        merged.entries[key] = kept
        labels: dict[str, set[str]] = {}
        for name, e in group:
            labels.setdefault(e.label, set()).add(name)
        if len(labels) > 1:
            merged.conflicts.append({"key": key, "labels": {lab: sorted(names) for lab, names in sorted(labels.items())},
                                     "kept": kept.label})
        else:
            merged.duplicates += len(group) - 1
    return merged


class LabelCache:
    """Append-only JSON-lines cache of labels: the main file plus every shard file beside it, merged on open
    (`merge_labels`). New entries go to the main file, or with `shard=(i, n)` to that shard's own file."""

    def __init__(self, path: str | Path, *, shard: tuple[int, int] | None = None):
        self.path = Path(path).expanduser()
        if shard is not None:
            check_shard(*shard)
        self.write_path = shard_path(self.path, *shard) if shard else self.path
        self.files = [p for p in [self.path, *shard_files(self.path)] if p.is_file()]
        merged = merge_labels((p.name, read_label_file(p)) for p in self.files)
        self.entries: dict[str, LabelEntry] = merged.entries
        self.duplicates, self.conflicts = merged.duplicates, merged.conflicts
        if self.conflicts:
            log.warning("%d cache keys carry conflicting labels across %s (kept one deterministically): %s",
                        len(self.conflicts), self.path.name, self.conflicts[:3])

    def get(self, key: str) -> LabelEntry | None:
        return self.entries.get(key)

    def append(self, entries: list[LabelEntry]) -> None:
        self.write_path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.write_path.exists()
        with self.write_path.open("a", encoding="utf-8") as f:
            for e in entries:
                f.write(json.dumps(asdict(e), sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if new:
            share(self.write_path)  # pods of other users (other shards, curation) read and extend it
        for e in entries:
            self.entries[e.key] = e

    def write_merged(self) -> Path:
        """Replace the main file (atomically) by the merge of it and every shard file, one line per key sorted by
        key: the same bytes whatever order the shards were labelled or listed in. Shard files are left in place
        (merging again gives the same file)."""
        lines = [json.dumps(asdict(self.entries[k]), sort_keys=True) + "\n" for k in sorted(self.entries)]
        return atomic_write_text(self.path, "".join(lines))


# --------------------------------------------------------------------------------------------------------------
# The labeller
# --------------------------------------------------------------------------------------------------------------


def require_labeller_liger(device: str, setting: str = "label_liger_kernels", *, model=None) -> None:
    """Bad input found before any data is read or model loads: Liger's kernels asked of the labeller where they
    cannot run, on a device that is not a CUDA GPU (`model`'s own when given, else `device` as the labeller picks
    it) or without the liger-kernel package."""
    from components.common.modeling import pick_device, require_liger

    on = model.device.type if model is not None else pick_device(device)
    require_liger(True, setting, on_cuda=str(on).startswith("cuda"))


class ModalityLabeller:
    """Scores the candidate categories for (image, question) pairs with a Qwen2.5-VL-family model.

    `profile` (a dict) collects per-call timings and shapes: GPU time of the prompt pass (CUDA events; wall time on
    CPU), of the candidate pass (stock path), and each question's prompt length and image grid."""

    def __init__(
        self,
        model_ref: str,
        *,
        model=None,
        processor=None,
        candidates: tuple[str, ...] = MODALITIES,
        prompt_version: str = PROMPT_VERSION,
        device: str = "auto",
        max_pixels: int | None = 512 * 28 * 28,
        compile: bool = False,
        liger_kernels: bool = False,
    ):
        if liger_kernels:  # refused here, before any model loads, where the kernels cannot run
            require_labeller_liger(device, "liger_kernels", model=model)
        self.model_ref = model_ref
        self.candidates = tuple(candidates)
        self.prompt_version = prompt_version
        self.device = device
        self.max_pixels = max_pixels
        self.compile = compile
        self.liger_kernels = liger_kernels
        self.profile: dict[str, Any] | None = None
        self._model, self._processor = model, processor
        self._spec = None

    def _load(self):
        if self._model is None:
            from components.common.modeling import (
                load_model_and_processor,
                load_processor,
            )

            self._model, self._processor = load_model_and_processor(self.model_ref, device=self.device)
            size = getattr(self._processor.image_processor, "size", None)
            longest = getattr(size, "longest_edge", None)
            if self.max_pixels is not None and longest is not None and longest > self.max_pixels:
                # cap image tokens (PMC-VQA figures can be large); never raise a checkpoint's own, smaller limit
                self._processor = load_processor(self.model_ref, max_pixels=self.max_pixels)
        return self._model, self._processor

    def messages(self, question: str) -> list[dict]:
        return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT.format(question=question)}]}]

    def prompt_text(self, question: str) -> str:
        _, proc = self._load()
        return proc.apply_chat_template(self.messages(question), add_generation_prompt=True, tokenize=False)

    # -- timing helpers (only when profiling) ------------------------------------------------------------------

    def _mark(self):
        if self.profile is None:
            return None
        import torch

        if self._model.device.type == "cuda":
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def _add_time(self, name: str, start, end) -> None:
        """Add the time between two marks to profile[name] (call after a host sync: the events are complete)."""
        if self.profile is None:
            return
        sec = start.elapsed_time(end) / 1e3 if hasattr(start, "elapsed_time") else end - start
        self.profile[name] = self.profile.get(name, 0.0) + sec

    def _add_shapes(self, lengths: list[int], grids: list[tuple[int, int, int]]) -> None:
        if self.profile is not None:
            self.profile.setdefault("prompt_lengths", []).extend(int(n) for n in lengths)
            self.profile.setdefault("grids", []).extend(tuple(int(v) for v in g) for g in grids)

    # -- stock path --------------------------------------------------------------------------------------------

    def score_batch(self, items: list[tuple[Any, str]]) -> list[dict[str, float]]:
        """Log-likelihood of every candidate for each (PIL image, question); one prompt pass + one candidate pass."""
        import torch

        model, proc = self._load()
        tok = proc.tokenizer
        texts = [proc.apply_chat_template(self.messages(q), add_generation_prompt=True, tokenize=False) for _, q in items]
        enc = proc(text=texts, images=[im for im, _ in items], return_tensors="pt", padding=True).to(model.device)
        end = tok.convert_tokens_to_ids("<|im_end|>")
        cand_ids = [tok(c, add_special_tokens=False)["input_ids"] + [end] for c in self.candidates]
        n_b, n_c, l_c = len(items), len(cand_ids), max(len(c) for c in cand_ids)
        pad = tok.pad_token_id if tok.pad_token_id is not None else end
        cand = torch.full((n_c, l_c), pad, dtype=torch.long)
        cand_mask = torch.zeros((n_c, l_c), dtype=torch.long)
        for i, ids in enumerate(cand_ids):
            cand[i, : len(ids)] = torch.tensor(ids)
            cand_mask[i, : len(ids)] = 1
        with torch.inference_mode():
            t0 = self._mark()
            out = model(**enc, use_cache=True)
            t1 = self._mark()
            first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # (B, V): next token after the prompt
            # 3D (mRoPE) positions of the prompt; candidates continue from each row's largest position + 1.
            pos, _ = model.model.get_rope_index(
                enc["input_ids"],
                enc.get("mm_token_type_ids"),
                image_grid_thw=enc.get("image_grid_thw"),
                attention_mask=enc["attention_mask"],
            )
            pos = pos.masked_fill(enc["attention_mask"][None] == 0, -1)
            next_pos = pos.amax(dim=(0, 2)) + 1  # (B,)
            cache = out.past_key_values
            cache.batch_repeat_interleave(n_c)
            rows = cand.repeat(n_b, 1).to(model.device)  # row b*C + c = candidate c for question b
            rmask = cand_mask.repeat(n_b, 1).to(model.device)
            attn = torch.cat([enc["attention_mask"].repeat_interleave(n_c, dim=0), rmask], dim=1)
            positions = next_pos.repeat_interleave(n_c)[:, None] + torch.arange(l_c, device=model.device)[None]
            out2 = model(
                input_ids=rows,
                attention_mask=attn,
                position_ids=positions[None].expand(3, -1, -1),
                past_key_values=cache,
                use_cache=False,
            )
            rest = torch.log_softmax(out2.logits[:, :-1].float(), dim=-1)  # predicts candidate tokens 1..
            tok_lp = torch.gather(rest, 2, rows[:, 1:, None]).squeeze(-1) * rmask[:, 1:]
            head = first.repeat_interleave(n_c, dim=0).gather(1, rows[:, :1]).squeeze(1)
            t2 = self._mark()
            total = (head + tok_lp.sum(dim=1)).view(n_b, n_c).cpu()
        if self.profile is not None:
            self._add_time("prompt_pass_s", t0, t1)
            self._add_time("candidate_pass_s", t1, t2)
            self._add_shapes(enc["attention_mask"].sum(1).tolist(), enc["image_grid_thw"].tolist())
        return [{c: float(total[b, i]) for i, c in enumerate(self.candidates)} for b in range(n_b)]

    # -- fast path ---------------------------------------------------------------------------------------------

    def scoring_spec(self):
        """What the CPU side of the fast path needs (`components.curate.scoring.ScoringSpec`)."""
        if self._spec is None:
            from components.curate.scoring import ScoringSpec

            model, proc = self._load()
            self._spec = ScoringSpec.from_model(model, proc, self.candidates)
        return self._spec

    def prompt_lengths(self, texts: list[str], image_sizes: list[tuple[int, int]]) -> list[int]:
        """Prompt tokens of each (templated prompt, image (width, height)) once the processor has expanded the
        image, computed without processing the image: the batches of the fast path are planned from these."""
        from components.curate.scoring import prompt_length

        _, proc = self._load()
        ip = proc.image_processor
        unit = int(ip.merge_size) ** 2
        n_text = [len(ids) for ids in proc.tokenizer(texts)["input_ids"]]
        n_image = [ip.get_number_of_image_patches(h, w, {}) // unit for w, h in image_sizes]
        return [prompt_length(t, i) for t, i in zip(n_text, n_image)]

    def score_prepared(self, batch: dict[str, Any]) -> list[dict[str, float]]:
        """Log-likelihood of every candidate for each row of a batch from `components.curate.scoring.prepare_batch`;
        one forward over prompts and candidates, one host sync."""
        import torch

        from components.curate.scoring import score_prepared, to_device

        model, _ = self._load()
        with torch.inference_mode():
            t0 = self._mark()
            total = score_prepared(model, to_device(batch, model.device), compile=self.compile,
                                   liger_kernels=self.liger_kernels)
            t1 = self._mark()
            total = total.cpu()
        if self.profile is not None:
            self._add_time("prompt_pass_s", t0, t1)
            self._add_shapes(batch["lens"].tolist(), batch["grids"])
        return [{c: float(total[b, i]) for i, c in enumerate(self.candidates)} for b in range(total.shape[0])]


def _prepare(items: list[tuple[Path, str]], processor, spec, pin: bool) -> dict[str, Any]:
    """The CPU side of the fast path for one planned batch: images decoded and preprocessed, positions and layouts
    built; in page-locked memory when `pin` (the copy to the GPU is then asynchronous)."""
    import torch
    from PIL import Image

    from components.curate.scoring import prepare_batch

    loaded = []
    for path, text in items:
        with Image.open(path) as im:
            loaded.append((im.convert("RGB"), text))
    batch = prepare_batch(loaded, processor, spec)
    if not pin:
        return batch

    def pinned(v):
        if isinstance(v, torch.Tensor):
            return v.pin_memory()
        return {k: pinned(x) for k, x in v.items()} if isinstance(v, dict) else v

    return {k: pinned(v) for k, v in batch.items()}


def _prefetched(make, n: int, workers: int):
    """make(0), ..., make(n - 1) in order. With workers > 0 a thread pool computes them up to 2 x workers ahead of
    the consumer (image decoding, resizing and numpy work release the GIL), so preprocessing overlaps the GPU's
    forward; threads need no shared memory (a pod's small /dev/shm) and no fork of a process holding the GPU."""
    if workers == 0:
        for i in range(n):
            yield make(i)
        return
    from collections import deque

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="label-prepare")
    try:
        ahead = deque(pool.submit(make, i) for i in range(min(n, 2 * workers)))
        following = len(ahead)
        while ahead:
            done = ahead.popleft().result()
            if following < n:
                ahead.append(pool.submit(make, following))
                following += 1
            yield done
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _workers(requested: int, device_type: str) -> int:
    if requested >= 0:
        return requested
    return min(4, max(1, (os.cpu_count() or 1) - 1)) if device_type == "cuda" else 0


def _threaded(fn, items: list) -> list:
    """fn over items by a thread pool (file reads and hashing release the GIL); in order."""
    if len(items) < 64:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) * 2)) as pool:
        return list(pool.map(fn, items))


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image file's header (nothing is decoded)."""
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def label_modalities(
    records: list[MCQRecord],
    image_root: str | Path,
    labeller: ModalityLabeller,
    cache: LabelCache,
    batch_size: int = 8,
    *,
    fast: bool = True,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
    workers: int = -1,
    shard: tuple[int, int] | None = None,
    stats: dict[str, Any] | None = None,
) -> dict[str, LabelEntry]:
    """Label every record (image paths relative to `image_root`); cached items are not scored again.

    fast: length-sorted batches of about `token_budget` prompt tokens (rows x longest prompt incl. image tokens),
    preprocessed by `workers` threads ahead of the GPU (-1: min(4, cores - 1) on a GPU, 0 on CPU; 0 = inline),
    one forward per batch. Otherwise the stock path: `batch_size` questions per batch in record order.
    shard=(i, n): label only the questions of shard i of n (`shard_of`); the result then holds the records whose
    label is known (this shard's and those already cached). `stats` receives counts and timings."""
    from PIL import Image
    from tqdm.auto import tqdm

    if token_budget < 1:
        raise ValueError(f"token_budget={token_budget} must be >= 1 (--label-token-budget)")
    if shard is not None:
        check_shard(*shard)
    t_start = time.perf_counter()
    image_root = Path(image_root)
    keyed: dict[str, LabelEntry | None] = {}
    todo: list[tuple[str, MCQRecord, str, str]] = []
    by_record: dict[str, str] = {}
    for rec in records:
        if rec.image is None:
            raise ValueError(f"record {rec.id!r} has no image; the modality labeller needs one")
    unique = sorted({rec.image for rec in records})
    image_sha = dict(zip(unique, _threaded(sha256_file, [image_root / im for im in unique])))
    for rec in records:
        qsha = _sha(rec.question)
        key = cache_key(image_sha[rec.image], qsha, labeller.model_ref, labeller.prompt_version)
        by_record[rec.id] = key
        if key not in keyed:
            keyed[key] = cache.get(key)
            if keyed[key] is None and (shard is None or shard_of(key, shard[1]) == shard[0]):
                todo.append((key, rec, image_sha[rec.image], qsha))
    n_cached = sum(e is not None for e in keyed.values())
    if stats is not None:
        stats.update(path="fast" if fast else "stock", questions=len(todo), cached=n_cached, batches=0,
                     prepare_wait_s=0.0, write_s=0.0)

    def record(batch, scores) -> None:
        t0 = time.perf_counter()
        now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        entries = [
            LabelEntry(key, isha, qsha, labeller.model_ref, labeller.prompt_version, max(s, key=s.get), s, now)
            for (key, _, isha, qsha), s in zip(batch, scores)
        ]
        cache.append(entries)  # flushed before the next batch is scored
        for e in entries:
            keyed[e.key] = e
        if stats is not None:
            stats["batches"] += 1
            stats["write_s"] += time.perf_counter() - t0

    desc = f"labelling modality ({n_cached} cached)" + (f", shard {shard[0]}/{shard[1]}" if shard else "")
    with tqdm(total=len(todo), desc=desc, unit="q", disable=None) as bar:
        if todo and not fast:
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                items = []
                for _, rec, _, _ in batch:
                    with Image.open(image_root / rec.image) as im:
                        items.append((im.convert("RGB"), rec.question))
                record(batch, labeller.score_batch(items))
                bar.update(len(batch))
        elif todo:
            from components.curate.scoring import plan_batches

            model, proc = labeller._load()
            spec = labeller.scoring_spec()
            paths = [image_root / rec.image for _, rec, _, _ in todo]
            sizes = _threaded(_image_size, paths)
            texts = [labeller.prompt_text(rec.question) for _, rec, _, _ in todo]
            plan = plan_batches(labeller.prompt_lengths(texts, sizes), token_budget, spec.n_cand_tokens)
            n_workers = _workers(workers, model.device.type)
            pin = model.device.type == "cuda"
            local = threading.local()

            def make(b: int) -> dict[str, Any]:
                if not hasattr(local, "proc"):  # one processor per thread: a fast tokenizer is not shareable
                    local.proc = copy.deepcopy(proc) if n_workers else proc
                return _prepare([(paths[i], texts[i]) for i in plan[b]], local.proc, spec, pin)

            if stats is not None:
                stats.update(workers=n_workers, token_budget=token_budget, planned_batches=len(plan))
            batches = _prefetched(make, len(plan), n_workers)
            try:
                for idx in plan:
                    t0 = time.perf_counter()
                    prepared = next(batches)
                    if stats is not None:
                        stats["prepare_wait_s"] += time.perf_counter() - t0
                    batch = [todo[i] for i in idx]
                    record(batch, labeller.score_prepared(prepared))
                    bar.update(len(batch))
            finally:
                batches.close()  # an interruption stops the preprocessing threads too
    if stats is not None:
        stats["wall_s"] = time.perf_counter() - t_start
    return {rid: keyed[key] for rid, key in by_record.items() if keyed[key] is not None}

