"""Contamination: keep every question a model will be evaluated on out of the data it trains on (pure functions).

    keys = eval_keys({"benchmark pmc-vqa": items, "eval_set": items, ...}, train_pool=train_items)
    hits = contaminated(train_items, keys)      # {id: Hit(reason, sources)} for the questions to remove

An item is `(id, image_key, question_key)`: the sha256 of the image's decoded pixels (`records.image_key`: a JPEG and
its lossless PNG copy match) and the question's normalised text (`question_key`: case, punctuation and spacing
ignored). A training question is contaminated when its image appears in an evaluation set, or its question text
does. PMC-VQA is both a training source and a benchmark, and the diagnosis slice is held out of the same pool, so
both keys matter.

A question text asked about several different images ("Which organ is shown in this abdominal CT image?" for every
OrganAMNIST image, "What is the modality of this image?" across PMC-VQA) names a task, not an item: matching it
would remove every training question of the task without any leak. Such *template* texts (asked about more than one
distinct image in the evaluation sets, or in the training pool) are not used as keys; the image key still catches a
repeated item. The number of templates left out is reported with the counts.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Item:
    id: str
    image: str | None  # image_key (pixel sha256), None for a text-only question
    question: str  # question_key (normalised text)


@dataclass
class EvalKeys:
    images: dict[str, set[str]] = field(default_factory=dict)  # image key -> evaluation sets holding it
    questions: dict[str, set[str]] = field(default_factory=dict)  # question key -> evaluation sets holding it
    templates: set[str] = field(default_factory=set)  # question keys left out: asked about several images


@dataclass(frozen=True)
class Hit:
    reason: str  # "image", "question" or "image+question"
    sources: tuple[str, ...]  # the evaluation sets it was found in


def question_key(text: str) -> str:
    """Normalised question text: lower case, punctuation removed, whitespace collapsed."""
    return " ".join(re.sub(r"[^\w\s]", " ", (text or "").lower()).split())


def _templates(items: Iterable[Item]) -> set[str]:
    images: dict[str, set[str | None]] = defaultdict(set)
    for it in items:
        images[it.question].add(it.image)
    return {q for q, imgs in images.items() if len(imgs) > 1}


def eval_keys(eval_sets: dict[str, list[Item]], train_pool: Iterable[Item] = ()) -> EvalKeys:
    """The keys of every evaluation set; question texts that are templates (on either side) are left out."""
    every = [it for items in eval_sets.values() for it in items]
    templates = _templates(every) | _templates(train_pool)
    keys = EvalKeys(templates={q for q in templates if q})
    for name, items in eval_sets.items():
        for it in items:
            if it.image:
                keys.images.setdefault(it.image, set()).add(name)
            if it.question and it.question not in keys.templates:
                keys.questions.setdefault(it.question, set()).add(name)
    return keys


def contaminated(train: Iterable[Item], keys: EvalKeys) -> dict[str, Hit]:
    """{id: Hit} for every training item whose image or (non-template) question text is in an evaluation set."""
    out: dict[str, Hit] = {}
    for it in train:
        by_image = keys.images.get(it.image, set()) if it.image else set()
        by_text = keys.questions.get(it.question, set()) if it.question not in keys.templates else set()
        if by_image or by_text:
            reason = "image+question" if by_image and by_text else ("image" if by_image else "question")
            out[it.id] = Hit(reason, tuple(sorted(by_image | by_text)))
    return out


def counts(hits: dict[str, Hit], checked: int) -> dict:
    """What the curation report shows for one training set."""
    by_reason: dict[str, int] = defaultdict(int)
    by_source: dict[str, int] = defaultdict(int)
    for h in hits.values():
        by_reason[h.reason] += 1
        for s in h.sources:
            by_source[s] += 1
    return {"checked": checked, "removed": len(hits), "by_reason": dict(sorted(by_reason.items())),
            "by_source": dict(sorted(by_source.items()))}
