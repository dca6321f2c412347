"""One launcher shape for every step: dataclasses become flags (TRL's `TrlParser`, an `HfArgumentParser`), a
`--config` YAML supplies values that flags given on the command line override, and every error is one line.

    parser = StepParser("python -m components.diagnose", __doc__, DiagnoseConfig, DiagnoseIO)
    cfg, io = parser.parse(argv)            # bad flag, value or YAML: one line "PROG: error: ..." and exit 2

    def main(argv=None) -> int:
        return launch(make_parser(), run, argv)   # run(cfg, io); bad input (OSError, ValueError): one line, exit 2

A step's knobs live in its config dataclass (validated in `__post_init__`, messages naming the flag), its inputs and
outputs in a second dataclass; every field is a flag `--field-name` (also spelled `--field_name`). Booleans read
`--lora true|false` (what the Kubeflow components pass), a bare `--lora` means true, `--no-lora` false for fields
that default to true. A YAML key that names no field, or holds a value of the wrong type, is an error naming the
file and the key; so is a check of the config dataclass that fails on a key the file sets (e.g. conflicting
settings). `--config` takes a path or the name of a recipe in configs/ (`components.common.recipes`).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trl import TrlParser

# Errors that mean bad input (a missing or unreadable file, a malformed row or value): one line, exit status 2.
BAD_INPUT = (OSError, ValueError)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the module docstring's layout, shows defaults, and prints help texts holding '%' (e.g. "95%") as is."""

    def _get_help_string(self, action):
        text = (action.help or "").replace("%", "%%")
        if action.option_strings and action.default not in (None, argparse.SUPPRESS, "") and action.nargs != 0:
            text += " (default: %(default)s)"
        return text


def check_nonempty(obj: Any, optional: tuple[str, ...] = ()) -> None:
    """Raise naming the flag when a string field of an inputs/outputs dataclass is empty (except `optional` ones)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name not in optional and isinstance(value, str) and not value.strip():
            raise ValueError(f"{f.name} is empty: pass --{f.name.replace('_', '-')}")


def yaml_type_errors(data: dict[str, Any], types: dict[str, Any]) -> list[str]:
    """Messages for values of `data` whose type differs from the dataclass field's (an int is a valid float; a
    bool is never an int). `types` maps field name -> annotation."""
    errors = []
    for key, value in data.items():
        want = types[key]
        want = next((a for a in typing.get_args(want) if a is not type(None)), want) if typing.get_args(want) else want
        if not isinstance(want, type):
            continue
        ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
        ok = ok or (want is float and isinstance(value, int) and not isinstance(value, bool))
        if value is None and type(None) in typing.get_args(types[key]):
            ok = True
        if not ok:
            errors.append(f"key {key!r} should be {want.__name__}, got {value!r}")
    return errors


def field_types(*dataclass_types: type) -> dict[str, Any]:
    """Field name -> resolved annotation for every init field of the dataclasses."""
    out: dict[str, Any] = {}
    for dtype in dataclass_types:
        hints = typing.get_type_hints(dtype)
        out.update({f.name: hints[f.name] for f in dataclasses.fields(dtype) if f.init})
    return out


def read_yaml_values(path: str | Path, dataclass_types: tuple[type, ...]) -> dict[str, Any]:
    """A YAML mapping of field values, checked: every key a field of `dataclass_types`, every value of its type."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such config file") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must be a YAML mapping of field: value")
    types = field_types(*dataclass_types)
    unknown = [k for k in data if k not in types]
    if unknown:
        raise ValueError(f"{path}: unknown key {unknown[0]!r}; known keys: {', '.join(types)}")
    errors = yaml_type_errors(data, types)
    if errors:
        raise ValueError(f"{path}: {errors[0]}")
    return data


class StepParser(TrlParser):
    """TRL's dataclass parser with the project's `--config` handling and one-line errors (see the module docstring)."""

    def __init__(self, prog: str, description: str | None, *dataclass_types: type):
        super().__init__(list(dataclass_types), prog=prog, description=description, formatter_class=_HelpFormatter)
        self.add_argument(
            "--config", metavar="YAML", default=argparse.SUPPRESS,  # read by parse() itself
            help="YAML file of field: value pairs for the flags below; flags given on the command line override it",
        )
        self._initial = [(a, a.default, a.required) for a in self._actions]  # per action: --x and --no-x share a dest

    def error(self, message: str):  # argparse's own errors: one line, exit 2
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)

    def parse(self, argv: list[str] | None = None) -> tuple:
        """The dataclass instances, filled from `--config` (if given) and then from the flags."""
        args = list(sys.argv[1:] if argv is None else argv)
        config = None
        for i, a in enumerate(args):
            if a == "--config" and i + 1 < len(args):
                config = args[i + 1]
                del args[i : i + 2]
                break
            if a.startswith("--config="):
                config = a.split("=", 1)[1]
                del args[i]
                break
        for a, default, required in self._initial:  # a config file read by an earlier parse() must not leak
            a.default, a.required = default, required
        values: dict[str, Any] = {}
        try:
            if config:
                from components.common.recipes import resolve_config

                config = str(resolve_config(config))  # a path, or a recipe name from configs/
                values = read_yaml_values(config, tuple(self.dataclass_types))
                self.set_defaults_with_config(**values)
            return tuple(self.parse_args_into_dataclasses(args=args, look_for_args_file=False))
        except BAD_INPUT as e:  # a config file's problem, or a config dataclass's __post_init__ check
            message = str(e)
            given = {a[2:].split("=", 1)[0].replace("-", "_") for a in args if a.startswith("--")}
            from_file = [k for k in values if k not in given]  # keys whose value came from the file
            if from_file and not message.startswith(config) and any(re.search(rf"\b{k}\b", message) for k in from_file):
                message = f"{config}: {message}"  # a check failed on a key the file sets: name the file too
            self.error(message)


def fail(prog: str, err: BaseException) -> int:
    """Report bad input as one line on stderr; the exit status launchers return for it."""
    from components.common.redact import redact_text

    print(f"{prog}: error: {redact_text(str(err))}", file=sys.stderr)  # an error may quote a URL with credentials
    return 2


def launch(parser: StepParser, run: Callable[..., Any], argv: list[str] | None = None) -> int:
    """Parse `argv` and call `run(*dataclasses)`; bad input of any kind ends as one line and exit status 2
    (returned, so that callers such as the Kubeflow components see it; `--help` still exits)."""
    try:
        parsed = parser.parse(argv)
    except SystemExit as e:
        if e.code == 2:
            return 2
        raise
    from components.common.lineage import mark_step_start

    mark_step_start()  # the lineage record's wall time and GPU-hours count from here
    try:
        run(*parsed)
    except BAD_INPUT as e:
        return fail(parser.prog, e)
    return 0
