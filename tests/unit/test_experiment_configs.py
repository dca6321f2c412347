"""Every experiment YAML in configs/ loads into its step's dataclass (sft_*.yaml -> SFTConfig, grpo_*.yaml ->
SharpenConfig) and names its exact run command in its header."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from components.grpo.config import SharpenConfig
from components.sft.config import SFTConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CLASSES = {"sft": SFTConfig, "grpo": SharpenConfig}
FILES = sorted(p for p in CONFIGS.glob("*.yaml") if p.name.split("_")[0] in CLASSES)


def test_configs_exist():
    assert {p.name.split("_")[0] for p in FILES} == {"sft", "grpo"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_config_loads_into_dataclass(path):
    cls = CLASSES[path.name.split("_")[0]]
    values = yaml.safe_load(path.read_text())
    cfg = cls(**values)  # unknown keys raise TypeError, bad values ValueError
    assert dataclasses.asdict(cfg) == {**dataclasses.asdict(cls()), **values}
    assert f"-m components.{path.name.split('_')[0]} --config configs/{path.name}" in path.read_text()


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_launcher_reads_config(path, tmp_path):
    step = path.name.split("_")[0]
    if step == "sft":
        from components.sft.__main__ import make_parser

        argv = ["--model", "m", "--sft-set", "s", "--diagnosis", "d", "--out", "o"]
    else:
        from components.grpo.__main__ import make_parser

        argv = ["--model", "m", "--rl-set", "r", "--watch-set", "w", "--diagnosis", "d", "--out", "o"]
    cfg, io = make_parser().parse([*argv, "--config", str(path), "--seed", "7"])
    assert isinstance(cfg, CLASSES[step]) and io.out == "o"
    assert cfg.seed == 7  # the flag overrides the file
    assert cfg.max_steps == yaml.safe_load(path.read_text())["max_steps"]


def _launcher(step):
    if step == "sft":
        from components.sft.__main__ import main

        return main, ["--model", "m", "--sft-set", "s", "--diagnosis", "d", "--out", "o"]
    from components.grpo.__main__ import main

    return main, ["--model", "m", "--rl-set", "r", "--watch-set", "w", "--diagnosis", "d", "--out", "o"]


@pytest.mark.parametrize(
    "recipe, edit, named",
    [
        # a key that names no setting (a typo must not be silently ignored)
        ("grpo_qwen25vl7b_care.yaml", {"learning_rat": 1e-6}, "'learning_rat'"),
        ("sft_qwen25vl7b_full.yaml", {"lora_rank": 8}, "'lora_rank'"),
        # a value of the wrong type
        ("grpo_qwen25vl7b_care.yaml", {"max_new_tokens": "2k"}, "'max_new_tokens' should be int"),
        ("sft_qwen25vl7b_lora.yaml", {"lora": "yes"}, "'lora' should be bool"),
        # conflicting settings: LoRA + ZeRO-3 (+ GRPO-CARE's EMA reference)
        ("grpo_qwen25vl7b_care.yaml", {"lora": True}, "lora=True and deepspeed=True conflict (with GRPO-CARE"),
        ("sft_qwen25vl7b_full.yaml", {"lora": True}, "lora=True and deepspeed=True conflict"),
        ("grpo_qwen25vl7b_care_lora.yaml", {"offload_optimizer": True}, "offload_optimizer=True needs deepspeed"),
    ],
)
def test_bad_recipe_fails_before_any_model_loads(recipe, edit, named, tmp_path, monkeypatch, capsys):
    import components.common.modeling as modeling

    monkeypatch.setattr(modeling, "load_model_and_processor", lambda *a, **k: pytest.fail("a model was loaded"))
    values = yaml.safe_load((CONFIGS / recipe).read_text())
    bad = tmp_path / recipe
    bad.write_text(yaml.safe_dump({**values, **edit}))
    main, argv = _launcher(recipe.split("_")[0])
    assert main([*argv, "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and named in err and str(bad) in err  # one line naming the key and the file


def test_a_conflict_set_on_the_command_line_does_not_blame_the_file(capsys):
    main, argv = _launcher("sft")
    # both settings come from flags: the recipe (deepspeed: false there) is not named
    assert main([*argv, "--config", "sft_demo_tiny", "--lora", "true", "--deepspeed", "true"]) == 2
    err = capsys.readouterr().err
    assert "lora=True and deepspeed=True conflict" in err and "sft_demo_tiny.yaml" not in err
    # one from the file, one from a flag: the file is named, since it holds half of the conflict
    assert main([*argv, "--config", "sft_qwen25vl7b_full", "--lora", "true"]) == 2
    assert "sft_qwen25vl7b_full.yaml: lora=True and deepspeed=True conflict" in capsys.readouterr().err


def test_recipes_by_name_in_the_profiles():
    from pipelines.params import load_profile

    for profile in ("cluster", "demo"):
        p = load_profile(profile)
        for name in (p.sft_recipe, p.grpo_recipe):
            assert (CONFIGS / f"{name}.yaml").is_file()
