"""Command-line flags from a step's config dataclass: one flag per field, help text from the field's metadata.

    parser = argparse.ArgumentParser()
    add_config_flags(parser, ProbeConfig, aliases={"model_ref": "--model"})
    cfg = config_from_args(ProbeConfig, parser.parse_args(argv))

Booleans read `--lora true|false` (what the kfp components pass); a bare `--lora` means true and `--no-lora`
false. With `overrides_only=True` every flag defaults to None, so that a YAML file (`--config`) provides the
values and only the flags given on the command line override it.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def parse_bool(text: str) -> bool:
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "y", "on"):
        return True
    if low in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _field_type(f: dataclasses.Field) -> type:
    name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "str")
    return _TYPES.get(name, str)


def add_config_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    aliases: dict[str, str] | None = None,
    overrides_only: bool = False,
) -> None:
    """Add one flag per field of dataclass `cls` (dest = field name)."""
    aliases = aliases or {}
    for f in dataclasses.fields(cls):
        flag = aliases.get(f.name, "--" + f.name.replace("_", "-"))
        help_ = f.metadata.get("help", "")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        default = None if (overrides_only or required) else f.default
        if not required:
            help_ = f"{help_} (default: {f.default!r})"
        help_ = help_.replace("%", "%%")  # argparse %-formats help strings
        kind = _field_type(f)
        if kind is bool:
            parser.add_argument(flag, dest=f.name, type=parse_bool, nargs="?", const=True, default=default,
                                metavar="BOOL", help=help_)
            parser.add_argument(f"--no-{flag[2:]}", dest=f.name, action="store_false", help=argparse.SUPPRESS)
        else:
            parser.add_argument(flag, dest=f.name, type=kind, default=default,
                                required=required and not overrides_only, help=help_)


def config_from_args(cls: type, args: argparse.Namespace, config_path: str | None = None):
    """Build `cls` from a YAML file (optional) overlaid with the flags that were given."""
    values: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    if config_path:
        import yaml

        loaded = yaml.safe_load(Path(config_path).read_text()) or {}
        unknown = set(loaded) - names
        if unknown:
            raise ValueError(f"{config_path}: unknown {cls.__name__} field(s) {', '.join(sorted(unknown))}")
        values.update(loaded)
    for name in names:
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    return cls(**values)
