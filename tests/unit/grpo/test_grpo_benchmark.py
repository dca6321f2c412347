"""benchmarks/grpo.py in its CPU smoke mode: the sharpen step's trainer with TRL's generation and with the project's
rollout engine (also with a larger rollout batch), every phase of a step timed and the bound arithmetic exercised."""

from __future__ import annotations

import json

import pytest


def test_grpo_benchmark_smoke_on_cpu(tmp_path, capsys):
    from benchmarks.grpo import StepTimer, main

    out = tmp_path / "bench.json"
    assert main(["--tiny", "--device", "cpu", "--work", str(tmp_path / "work"), "--runs",
                 "trl:2x2,shared_prefix:2x2+fullfwd,shared_prefix:2x2x2+nocudnn", "--steps", "1", "--warmup", "1",
                 "--json-out", str(out)]) == 0
    res = json.loads(out.read_text())
    runs = {r["run"]: r for r in res["results"]}
    assert list(runs) == ["trl:2x2", "shared_prefix:2x2+fullfwd", "shared_prefix:2x2x2+nocudnn"]
    assert runs["trl:2x2"]["care_scoring"] == "per_completion"  # the stock path is today's path, CARE included
    assert runs["shared_prefix:2x2+fullfwd"]["care_scoring"] == "shared_prefix"
    # CPU never checkpoints, so the prompt-once forward applies unless +fullfwd turns it off.
    assert runs["shared_prefix:2x2x2+nocudnn"]["policy_forward"] == runs["trl:2x2"]["policy_forward"] == "prompt once"
    assert runs["shared_prefix:2x2+fullfwd"]["policy_forward"].startswith("TRL's (off in the recipe")
    assert set(runs["shared_prefix:2x2x2+nocudnn"]["policy_forward_calls"]) == {"prompt once"}  # every forward took it
    # Rows per optimizer step: prompts x generations x accumulation; a random model fills (nearly) every completion.
    assert [r["rows_per_step"] for r in runs.values()] == [4, 4, 8]
    for r in runs.values():
        assert 0 < r["completion_tokens_per_step"] <= r["rows_per_step"] * 8 and r["tokens_per_s"] > 0
        split = r["split_s"]
        assert set(split) == set(StepTimer.PHASES)
        assert split["generation"] > 0 and split["forward_backward"] > 0 and split["reward_care"] > 0
        assert sum(split.values()) == pytest.approx(r["seconds_per_step"])  # the phases cover the step
        assert r["step_bound_fraction"] > 0 and set(r["phase_bound_fraction"]) == {
            "generation", "reward_care", "forward_backward"}
    assert res["summary"]["speedup"] == pytest.approx(
        runs[res["summary"]["fast_run"]]["tokens_per_s"] / runs["trl:2x2"]["tokens_per_s"])
    assert "SUMMARY grpo:" in capsys.readouterr().out


def test_run_options_parse():
    from benchmarks.grpo import parse_run

    r = parse_run("shared_prefix:2x8x16+nockpt+bf16lora+nocudnn")
    assert (r["prompts"], r["generations"], r["accumulation"]) == (2, 8, 16)
    assert not r["checkpointing"] and r["prompt_once"] and r["bf16_lora"] and r["no_cudnn"]
    assert parse_run("trl:8x8")["checkpointing"] and not parse_run("trl:8x8")["bf16_lora"]
    assert parse_run("shared_prefix:4x8x8+liger")["liger"] and not parse_run("trl:8x8")["liger"]


def test_cast_adapters_casts_only_the_trainable_lora_weights():
    import torch

    from benchmarks.grpo import cast_adapters

    model = torch.nn.Module()
    model.base = torch.nn.Linear(4, 4).to(torch.bfloat16).requires_grad_(False)
    model.lora_A = torch.nn.Linear(4, 2)  # fp32, trainable, as PEFT makes them
    model.head = torch.nn.Linear(4, 4)  # trainable but not an adapter
    assert cast_adapters(model) == 2  # lora_A's weight and bias
    assert model.lora_A.weight.dtype == torch.bfloat16 and model.head.weight.dtype == torch.float32


@pytest.mark.parametrize("spec", ["fast:8x8", "trl:8", "trl:8x8x2x2", "trl:0x8", "trl:8x8+slow"])
def test_grpo_benchmark_refuses_bad_run_specs(spec):
    from benchmarks.grpo import parse_run

    with pytest.raises(SystemExit, match="ENGINE:PROMPTSxGENERATIONS|unknown option"):
        parse_run(spec)


def test_a_run_out_of_gpu_memory_is_skipped_not_fatal():
    import torch

    from benchmarks.grpo import run_or_skip_oom

    def too_big(spec, n):
        raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {n} GiB\nmore detail")

    r = run_or_skip_oom(too_big, {"name": "grouped-nockpt:16", "batch": 16}, 7)
    assert r["run"] == "grouped-nockpt:16" and r["batch"] == 16
    assert r["skipped"].startswith("out of GPU memory (CUDA out of memory. Tried to allocate 7 GiB)")
    assert run_or_skip_oom(lambda spec, n: {"run": spec["name"], "n": n}, {"name": "ok"}, 3) == {"run": "ok", "n": 3}


@pytest.mark.parametrize("full_vocab", [False, True])
def test_the_benchmarks_random_7b_model_is_wired_to_the_tokenizer(tiny_model_dir, monkeypatch, full_vocab):
    """One builder for every benchmark's 7B-shaped model (here shrunk to two small layers): the image and vision tokens
    are the tokenizer's; the small-vocabulary model ends on <|im_end|> or <|endoftext|>, the full one keeps 152,064."""
    import copy

    import benchmarks.qwen25vl_7b as q
    from components.common.modeling import load_processor

    small = copy.deepcopy(q.QWEN25_VL_7B)
    small["text_config"].update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                                                                         "mrope_section": [2, 3, 3]})
    small["vision_config"].update(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                                  fullatt_block_indexes=[1])
    monkeypatch.setattr(q, "QWEN25_VL_7B", small)
    tok = load_processor(str(tiny_model_dir)).tokenizer
    model = q.random_qwen25vl_7b(tok, "cpu", full_vocab=full_vocab)
    cfg = model.config
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert cfg.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert model.get_input_embeddings().weight.shape[0] == (152064 if full_vocab else len(tok))
    ends = {tok.convert_tokens_to_ids("<|im_end|>")} | (set() if full_vocab else {tok.convert_tokens_to_ids("<|endoftext|>")})
    assert set(model.generation_config.eos_token_id) == ends
    assert next(model.parameters()).dtype.is_floating_point and str(next(model.parameters()).dtype) == "torch.bfloat16"
