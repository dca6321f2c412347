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
