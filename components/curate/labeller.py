"""Modality labeller: a VLM puts each PMC-VQA question in one imaging category, by constrained choice.

    labeller = ModalityLabeller("Qwen/Qwen2.5-VL-32B-Instruct")          # production (the paper's labeller)
    cache = LabelCache("~/.cache/medbridge/curate/modality_labels.jsonl")
    labels = label_modalities(records, image_root, labeller, cache)     # {record id: LabelEntry}

Constrained choice: rather than parse free text, the labeller scores each of the eight categories (MRI, CT,
ultrasound, X-ray, microscopy, dermatology, OCT, none) as the assistant's complete answer - the sum of the
log-probabilities of its tokens followed by the end-of-turn token, given the image and the prompt - and takes the
best. The label is therefore always one of the eight. Per batch of questions there is ONE forward pass over the
prompts (image included); its key/value cache is repeated for the candidates, which are scored in a second,
batched forward pass.

Results are cached in a JSON-lines file keyed by (image sha256, question sha256, labeller model reference, prompt
version). Every batch is appended and flushed to disk as soon as it is scored, so an interrupted run loses at
most one batch, and a rerun labels only what is missing. The model is opened only if something is missing.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from components.common.io import sha256_file
from components.common.records import MODALITIES, MCQRecord

PROMPT_VERSION = "modality-v1"
PROMPT = (
    "Which imaging modality produced this medical image? The question asked about it is:\n"
    "\"{question}\"\n"
    "Answer with exactly one of: MRI, CT, ultrasound, X-ray, microscopy, dermatology, OCT, none. "
    "Answer none when the modality is uncommon, ambiguous or unspecified, or the figure is not a medical image."
)


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


class LabelCache:
    """Append-only JSON-lines cache of labels; a torn last line (interrupted write) is ignored."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self.entries: dict[str, LabelEntry] = {}
        if self.path.is_file():
            with self.path.open(encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                        self.entries[row["key"]] = LabelEntry(**row)
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # a line cut short by an interruption: that item is labelled again

    def get(self, key: str) -> LabelEntry | None:
        return self.entries.get(key)

    def append(self, entries: list[LabelEntry]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            for e in entries:
                f.write(json.dumps(asdict(e), sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for e in entries:
            self.entries[e.key] = e


class ModalityLabeller:
    """Scores the candidate categories for (image, question) pairs with a Qwen2.5-VL-family model."""

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
    ):
        self.model_ref = model_ref
        self.candidates = tuple(candidates)
        self.prompt_version = prompt_version
        self.device = device
        self.max_pixels = max_pixels
        self._model, self._processor = model, processor

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
            out = model(**enc, use_cache=True)
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
            total = (head + tok_lp.sum(dim=1)).view(n_b, n_c).cpu()
        return [{c: float(total[b, i]) for i, c in enumerate(self.candidates)} for b in range(n_b)]


def label_modalities(
    records: list[MCQRecord],
    image_root: str | Path,
    labeller: ModalityLabeller,
    cache: LabelCache,
    batch_size: int = 8,
) -> dict[str, LabelEntry]:
    """Label every record (image paths relative to `image_root`); cached items are not scored again."""
    from PIL import Image
    from tqdm.auto import tqdm

    image_root = Path(image_root)
    keyed: dict[str, LabelEntry | None] = {}
    todo: list[tuple[str, MCQRecord, str, str]] = []
    by_record: dict[str, str] = {}
    image_sha: dict[str, str] = {}
    for rec in records:
        if rec.image is None:
            raise ValueError(f"record {rec.id!r} has no image; the modality labeller needs one")
        if rec.image not in image_sha:
            image_sha[rec.image] = sha256_file(image_root / rec.image)
        qsha = _sha(rec.question)
        key = cache_key(image_sha[rec.image], qsha, labeller.model_ref, labeller.prompt_version)
        by_record[rec.id] = key
        if key not in keyed:
            keyed[key] = cache.get(key)
            if keyed[key] is None:
                todo.append((key, rec, image_sha[rec.image], qsha))
    with tqdm(total=len(todo), desc=f"labelling modality ({len(keyed) - len(todo)} cached)", unit="q", disable=None) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            items = []
            for _, rec, _, _ in batch:
                with Image.open(image_root / rec.image) as im:
                    items.append((im.convert("RGB"), rec.question))
            scores = labeller.score_batch(items)
            now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            entries = [
                LabelEntry(key, isha, qsha, labeller.model_ref, labeller.prompt_version, max(s, key=s.get), s, now)
                for (key, _, isha, qsha), s in zip(batch, scores)
            ]
            cache.append(entries)  # flushed before the next batch starts
            for e in entries:
                keyed[e.key] = e
            bar.update(len(batch))
    return {rid: keyed[key] for rid, key in by_record.items()}
