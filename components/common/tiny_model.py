"""Build a tiny Qwen2.5-VL with random weights, saved as an ordinary Hugging Face model directory.

    python -m components.common.tiny_model --out /tmp/tiny-qwen2.5-vl

The directory holds `config.json`, `model.safetensors`, a byte-level BPE tokenizer trained locally with the
Qwen special tokens, `preprocessor_config.json` for the Qwen2-VL image processor and a Qwen-style chat
template. `components.common.modeling.load_model_and_processor` opens it through exactly the same code path
as `Qwen/Qwen2.5-VL-7B-Instruct` or a local 7B checkpoint. The weights are random: every number a run on
this model produces is a plumbing check, never a medical result, and its lineage record says synthetic.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from components.common.io import atomic_dir
from components.common.lineage import write_lineage

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
REASONING_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]

# A compact Qwen2.5-VL chat template: system prompt, image placeholders inside the user turn, generation prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Text the tokenizer is trained on: the words MedBridge prompts and answers use, so that prompts stay short.
_CORPUS = [
    "You are a helpful assistant. Answer the multiple-choice question about the medical image.",
    "Think step by step inside <think> </think> and give the option letter inside <answer> </answer>.",
    "<think>The image shows the finding.</think><answer>A</answer> <answer>B</answer> <answer>C</answer>",
    "<answer>D</answer> <answer>E</answer> <answer>F</answer> <answer>G</answer> <answer>H</answer>",
    "Options: A. B. C. D. E. F. G. H. I. J. K. Which class does this image show? What modality is this?",
    "MRI CT ultrasound X-ray microscopy dermatology OCT none normal pneumonia malignant benign",
    "blood cell neutrophil lymphocyte monocyte eosinophil basophil erythroblast platelet",
    "liver kidney spleen lung heart bladder femur pancreas colon tissue adipose debris mucus muscle",
    "choroidal neovascularization diabetic macular edema drusen retina melanoma nevus keratosis",
    "abdominal organ chest radiograph breast ultrasound pathology retinal fundus dermatoscope",
]


def _train_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=QWEN_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 20, trainer)
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None
    )
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS[1:]})
    tokenizer.add_tokens(REASONING_TOKENS)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(out_dir: str | Path, seed: int = 0, image_size: int = 56) -> Path:
    """Write a tiny random-weight Qwen2.5-VL model directory to `out_dir` (atomically) and return its path."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    torch.manual_seed(seed)
    tokenizer = _train_tokenizer(vocab_size=400)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    hidden, heads = 64, 4
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=heads,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]},
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            out_hidden_size=hidden,
            fullatt_block_indexes=[1],
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=image_size * image_size, max_pixels=image_size * image_size, patch_size=14, merge_size=2
    )
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        image_processor.save_pretrained(tmp)
        (tmp / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}, indent=2))
        write_lineage(
            tmp, step="tiny-model", artifact="model", params={"seed": seed, "image_size": image_size}, synthetic=True,
            summary="SYNTHETIC tiny Qwen2.5-VL with random weights (components.common.tiny_model): a plumbing model "
            "for the demo profile and tests; its outputs carry no medical meaning",
        )
    return out_dir


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="directory to write the model to (replaced atomically)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the random weights")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    print(build_tiny_model(args.out, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
