"""MCQ records, model references, and the tiny Qwen2.5-VL opening through the production loader."""

from __future__ import annotations

import numpy as np
import pytest

from components.common.modeling import load_model_and_processor, resolve_model_dir
from components.common.records import MCQRecord, load_records, save_records


def _rec(**kw):
    base = dict(id="q1", question="Which organ?", options=["liver", "kidney"], answer="B", image=None, task="organamnist", modality="CT")
    base.update(kw)
    return base


@pytest.mark.parametrize(
    "change, message",
    [
        ({"answer": "C"}, "field 'answer' is 'C' but must be one of A, B"),  # letter beyond the options
        ({"options": ["only"]}, "field 'options' must list 2-26"),  # a single option is no question
        ({"question": "  "}, "field 'question' is empty"),
        ({"modality": "PET"}, "field 'modality' is 'PET'"),  # not one of the eight labels
        ({"options": ["a", ""]}, "empty option"),
    ],
)
def test_record_validation_names_field(change, message):
    with pytest.raises(ValueError, match=message):
        MCQRecord.from_dict(_rec(**change), where="x.jsonl: line 3")


def test_load_records_names_file_line_field(tmp_path):
    save_records(tmp_path, [MCQRecord.from_dict(_rec())])
    assert load_records(tmp_path)[0].answer_text == "kidney"
    (tmp_path / "records.jsonl").write_text('{"id": "q1", "question": "q", "options": ["a", "b"], "answer": "A", "image": "images/missing.png", "task": "t"}\n')
    with pytest.raises(FileNotFoundError, match=r"records\.jsonl: line 1: field 'image'"):
        load_records(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a MedBridge dataset"):
        load_records(tmp_path / "nope")


@pytest.mark.parametrize(
    "ref, error",
    [
        ("", "empty"),
        ("/no/such/dir", "no such directory"),
        ("not-a-hub-id", "not a hub id"),
    ],
)
def test_resolve_model_dir_errors(ref, error):
    with pytest.raises((ValueError, FileNotFoundError), match=error):
        resolve_model_dir(ref)


def test_resolve_model_dir_passes_hub_ids_and_checks_local_dirs(tmp_path):
    assert resolve_model_dir("Qwen/Qwen2.5-VL-7B-Instruct") == "Qwen/Qwen2.5-VL-7B-Instruct"
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_model_dir(str(tmp_path))


def test_tiny_model_opens_like_a_checkpoint_and_sees_images(tiny_model_dir):
    import torch
    from PIL import Image

    model, processor = load_model_and_processor(str(tiny_model_dir), device="cpu")
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which?"}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8)) for _ in range(2)]
    enc = [processor(text=[text], images=[im], return_tensors="pt") for im in imgs]
    image_token = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert (enc[0]["input_ids"] == image_token).sum() == 4  # 56x56 px -> 4x4 patches -> 2x2 merged tokens
    with torch.no_grad():
        logits = [model(**e).logits[0, -1] for e in enc]
    # Different pixels must change the output: the image really reaches the model.
    assert not torch.allclose(logits[0], logits[1])
