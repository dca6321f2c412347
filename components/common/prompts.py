"""Prompt formats: how an MCQ record becomes the chat messages a VLM sees.

The prompt format is a parameter of diagnosis and evaluation (ChexReason: a general model did best with a
structured clinical scaffold, a medically pre-trained one with direct answers), and it is recorded with every run.

    think      (default) reason inside <think>…</think>, then the letter inside <answer>…</answer>
    direct     the option letter inside <answer>…</answer>, no reasoning
    scaffold   a 12-step structured clinical reasoning scaffold inside <think>, then <answer>
"""

from __future__ import annotations

from components.common.records import LETTERS, MCQRecord

PROMPT_VERSION = "1"

INSTRUCTIONS = {
    "think": (
        "Answer the multiple-choice question about the medical image. Think step by step inside <think> </think> "
        "tags, then give only the option letter inside <answer> </answer> tags."
    ),
    "direct": "Answer the multiple-choice question about the medical image. Give only the option letter inside "
    "<answer> </answer> tags.",
    "scaffold": (
        "Answer the multiple-choice question about the medical image. Inside <think> </think>, reason through "
        "these steps: 1) image type and view; 2) image quality; 3) anatomy shown; 4) systematic survey; "
        "5) salient findings; 6) normal variants; 7) pertinent negatives; 8) differential for each option; "
        "9) evidence for and against each option; 10) most likely option; 11) confidence; 12) final check of "
        "the letter. Then give only the option letter inside <answer> </answer> tags."
    ),
}
PROMPT_FORMATS = tuple(INSTRUCTIONS)
# Open-ended questions (no options): the same formats, asking for a short answer text instead of a letter.
OPEN_INSTRUCTIONS = {
    "think": "Answer the question about the medical image. Think step by step inside <think> </think> tags, then give "
    "only a short final answer (a few words) inside <answer> </answer> tags.",
    "direct": "Answer the question about the medical image. Give only a short answer (a few words) inside <answer> "
    "</answer> tags.",
    "scaffold": "Answer the question about the medical image. Inside <think> </think>, reason through: image type and "
    "view; anatomy shown; salient findings; pertinent negatives; the answer and your confidence. Then give only a "
    "short final answer (a few words) inside <answer> </answer> tags.",
}


def check_prompt_format(fmt: str) -> str:
    if fmt not in INSTRUCTIONS:
        raise ValueError(f"prompt_format={fmt!r} is not known; choose one of {', '.join(PROMPT_FORMATS)}")
    return fmt


def format_options(options: list[str]) -> str:
    return "\n".join(f"{LETTERS[i]}. {opt}" for i, opt in enumerate(options))


def question_text(rec: MCQRecord, fmt: str = "think") -> str:
    return f"{INSTRUCTIONS[check_prompt_format(fmt)]}\n\nQuestion: {rec.question}\nOptions:\n{format_options(rec.options)}"


def build_messages(rec: MCQRecord, fmt: str = "think") -> list[dict]:
    """Chat messages in the Qwen2.5-VL / TRL conversational form (the image is passed separately)."""
    content: list[dict] = []
    if rec.image is not None:
        content.append({"type": "image"})
    content.append({"type": "text", "text": question_text(rec, fmt)})
    return [{"role": "user", "content": content}]


def target_completion(rec: MCQRecord, fmt: str = "think") -> str:
    """The supervised answer used by SFT: a short rationale naming the option, then the letter."""
    check_prompt_format(fmt)
    answer = f"<answer>{rec.answer}</answer>"
    if fmt == "direct":
        return answer
    return f"<think>The image is consistent with {rec.answer_text}.</think>{answer}"


def build_open_messages(question: str, has_image: bool, fmt: str = "think") -> list[dict]:
    """Chat messages for an open-ended question (a short answer text inside <answer>…</answer>)."""
    content: list[dict] = [{"type": "image"}] if has_image else []
    content.append({"type": "text", "text": f"{OPEN_INSTRUCTIONS[check_prompt_format(fmt)]}\n\nQuestion: {question}"})
    return [{"role": "user", "content": content}]


def is_pil_image(x) -> bool:
    return hasattr(x, "tobytes") and hasattr(x, "size") and hasattr(x, "mode")


def image_digest(img) -> tuple:
    """A PIL image's content key: mode, size and a SHA-1 of its pixels (equal pixels, equal key)."""
    import hashlib

    return ("image", img.mode, tuple(img.size), hashlib.sha1(img.tobytes()).hexdigest())


def digest_once():
    """`image_digest` that hashes each image object once (for one batch whose images all stay alive meanwhile, so
    an object's identity stands for it: a prompt's G copies share their image object)."""
    digests: dict[int, tuple] = {}

    def digest(img) -> tuple:
        if id(img) not in digests:
            digests[id(img)] = image_digest(img)
        return digests[id(img)]

    return digest


def frozen_messages(x, image):
    """A hashable stand-in for chat messages (nested dicts, lists and plain values): dicts as sorted item tuples,
    lists as tuples, each PIL image as `image(img)`, anything else as it is."""
    if isinstance(x, dict):
        return tuple(sorted((k, frozen_messages(v, image)) for k, v in x.items()))
    if isinstance(x, (list, tuple)):
        return tuple(frozen_messages(v, image) for v in x)
    if is_pil_image(x):
        return image(x)
    return x
