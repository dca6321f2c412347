"""Recipes: the commented YAML files in configs/ that hold a training step's settings, found by name or path.

    resolve_config("grpo_qwen25vl7b_care")          # -> <source>/configs/grpo_qwen25vl7b_care.yaml
    resolve_config("my/own/recipe.yaml")            # an existing file is used as it is
    override_flags("{max_steps: 50, lora: true}")   # -> ["--max-steps", "50", "--lora", "true"]

A pipeline profile names each training step's recipe (`sft_recipe`, `grpo_recipe`); the step's launcher reads it with
`--config NAME` and flags override it. Recipes are looked up, in order, in $MEDBRIDGE_RECIPES, the source tree's
configs/ (a checkout or an editable install) and <prefix>/share/medbridge/configs (where a wheel installs them, e.g.
in the images).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

RECIPES_ENV = "MEDBRIDGE_RECIPES"


def recipe_dirs() -> list[Path]:
    dirs = [Path(os.environ[RECIPES_ENV])] if os.environ.get(RECIPES_ENV) else []
    dirs.append(Path(__file__).resolve().parents[2] / "configs")
    dirs.append(Path(sys.prefix) / "share" / "medbridge" / "configs")
    return dirs


def available_recipes() -> list[str]:
    return sorted({p.stem for d in recipe_dirs() if d.is_dir() for p in d.glob("*.yaml")})


def resolve_config(ref: str | Path) -> Path:
    """An existing file as given, else the recipe of that name (with or without .yaml) from `recipe_dirs()`."""
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    if len(path.parts) == 1 or path.parts[0] == "configs":
        for d in recipe_dirs():
            if (d / name).is_file():
                return d / name
    raise FileNotFoundError(f"{ref}: no such config file or recipe; recipes: {', '.join(available_recipes())}")


def override_flags(text: str, where: str = "overrides") -> list[str]:
    """A YAML mapping of field: value (e.g. a pipeline's `grpo_overrides`) as launcher flags; "" gives none."""
    import yaml

    from components.common.launch import flag_value

    if not text or not text.strip():
        return []
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{where}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a YAML mapping such as '{{max_steps: 50, lora: true}}', got {text!r}")
    return [a for k, v in data.items() for a in (f"--{str(k).replace('_', '-')}", flag_value(v))]
