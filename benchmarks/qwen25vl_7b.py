"""The Qwen/Qwen2.5-VL-7B-Instruct config (its config.json), for benchmarks that build the model with random weights."""

QWEN25_VL_7B = dict(
    text_config=dict(
        vocab_size=152064,
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        max_position_embeddings=128000,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]},
        bos_token_id=151643,
        eos_token_id=151645,
        tie_word_embeddings=False,
    ),
    vision_config=dict(
        depth=32,
        hidden_size=1280,
        intermediate_size=3420,
        num_heads=16,
        in_channels=3,
        out_hidden_size=3584,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31],
        hidden_act="silu",
        tokens_per_second=2,
    ),
    image_token_id=151655,
    video_token_id=151656,
    vision_start_token_id=151652,
    vision_end_token_id=151653,
    tie_word_embeddings=False,
)


def random_qwen25vl_7b(tokenizer, device: str, *, full_vocab: bool = False, batch_windows: bool = True):
    """The Qwen2.5-VL-7B-shaped model with RANDOM bf16 weights (seed 0, sdpa) built on `device`, wired to `tokenizer`'s
    special tokens (the project's tiny test tokenizer). `full_vocab`: keep the real 152,064-token vocabulary (the real
    LM head and sampling cost; token ids beyond the tokenizer's are never decoded to text), else the tokenizer's own.
    Generation ends on <|im_end|> (and <|endoftext|> with the small vocabulary). `batch_windows`: one attention call
    per vision layer (components.common.vision_attention), as the steps' own loading does; False keeps transformers'
    per-window loop (what the benchmarks compare against)."""
    import copy

    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>", "<|image_pad|>",
                                                            "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")}
    cfg = copy.deepcopy(QWEN25_VL_7B)
    if not full_vocab:
        cfg["text_config"].update(vocab_size=len(tokenizer), bos_token_id=ids["<|endoftext|>"],
                                  eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    cfg.update(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
               vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(Qwen2_5_VLConfig(**cfg), dtype=torch.bfloat16,
                                                                 attn_implementation="sdpa")
    if batch_windows:  # as load_model_and_processor does for every model the steps open
        from components.common.vision_attention import batch_window_attention

        batch_window_attention(model)
    model.generation_config.eos_token_id = [ids["<|im_end|>"]] + ([] if full_vocab else [ids["<|endoftext|>"]])
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    return model
