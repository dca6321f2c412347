"""Pipeline parameters, profiles and the CLI's argument handling."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pipelines.params import PipelineParams, available_profiles, load_profile, parse_overrides


def test_every_profile_loads():
    assert {"cluster", "demo"} <= set(available_profiles())
    for name in available_profiles():
        assert isinstance(load_profile(name), PipelineParams)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"tau": 1.5}, "tau=1.5 is outside"),  # tau is a probability threshold
        ({"force_branch": "rl"}, "force_branch='rl'"),
        ({"k": 0}, "k=0 must be >= 1"),
        ({"grpo_overrides": "{seed: 3}"}, "'seed' is a pipeline parameter"),  # must agree with the other steps
        ({"sft_overrides": "{lora: true, deepspeed: true}"}, "lora=True and deepspeed=True conflict"),
        ({"grpo_recipe": "grpo_missing"}, "names no recipe"),
        ({"nope": 1}, "unknown parameter 'nope'"),
        ({"k": "16"}, "should be int"),  # a string where an int is expected is refused, not coerced
    ],
)
def test_bad_values_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_profile("demo", overrides)


def test_parse_overrides_types_values():
    assert parse_overrides(["tau=0.6", "include_none=false", "flags=octmnist", "model_ref=/m"]) == {
        "tau": 0.6, "include_none": False, "flags": "octmnist", "model_ref": "/m"
    }
    # String parameters keep their text even when it reads as another YAML type.
    assert parse_overrides(["labeller_model=yes", "benchmarks_root=2024", "k=8"]) == {
        "labeller_model": "yes", "benchmarks_root": "2024", "k": 8
    }
    with pytest.raises(ValueError, match="expected NAME=VALUE"):
        parse_overrides(["tau"])


def test_cli_reports_bad_parameter_cleanly(capsys):
    from pipelines.cli import main

    assert main(["compile", "--set", "tau=2", "--out", "/dev/null"]) == 2
    err = capsys.readouterr().err
    assert "medbridge: error:" in err and "is outside [0, 1]" in err


@dataclass
class _Cfg:
    steps: int = field(default=3, metadata={"help": "optimizer steps (a 95% help text must render)"})
    lr: float = field(default=0.1, metadata={"help": "learning rate"})
    lora: bool = field(default=False, metadata={"help": "LoRA"})
    name: str = field(default="x", metadata={"help": "a string"})

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps={self.steps} must be >= 1 (--steps)")


@dataclass
class _IO:
    model: str = field(metadata={"help": "required: no default"})
    out: str = field(default="o", metadata={"help": "output"})


def _parser():
    from components.common.cli import StepParser

    return StepParser("prog", "doc", _Cfg, _IO)


def test_step_parser_types_flags_and_config(tmp_path):
    """One launcher shape: dataclass fields as flags (dashes or underscores), BOOL values, --config YAML that flags
    on the command line override."""
    p = _parser()
    assert p.parse(["--model", "m", "--steps", "5", "--lora", "true"]) == (_Cfg(5, 0.1, True), _IO("m"))
    assert p.parse(["--model", "m", "--lora"])[0].lora is True  # a bare boolean flag means true
    assert p.parse(["--model=m", "--lora", "false", "--steps", "2"])[0] == _Cfg(2)
    yml = tmp_path / "c.yaml"
    yml.write_text("model: from-file\nsteps: 9\nlr: 1\n")
    cfg, io = _parser().parse(["--config", str(yml), "--lr", "0.5"])
    assert (cfg, io) == (_Cfg(9, 0.5), _IO("from-file"))  # required field given by the file; the flag wins over it
    assert _parser().parse([f"--config={yml}"])[0].lr == 1.0  # an int where a float is expected is a float
    assert "95%" in _parser().format_help() and "(default: 3)" in _parser().format_help()


def test_step_parser_reused_forgets_the_previous_config(tmp_path):
    """A parser that read one config file must not carry its values into the next parse (the pipeline's recipe
    check parses many), and a field defaulting to true (with its --no- twin flag) keeps its default."""
    from components.common.cli import StepParser

    @dataclass
    class _On:
        fast: bool = field(default=True, metadata={"help": "defaults to true: HF adds --no_fast"})

    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("model: a\nsteps: 9\nlora: true\n")
    second.write_text("model: b\n")
    p = StepParser("prog", "doc", _Cfg, _IO, _On)
    assert p.parse(["--config", str(first)])[:2] == (_Cfg(9, 0.1, True), _IO("a"))
    assert p.parse(["--config", str(second)]) == (_Cfg(), _IO("b"), _On(True))
    assert p.parse(["--model", "m", "--no-fast"])[2] == _On(False)
    assert p.parse(["--model", "m"])[2] == _On(True)


@pytest.mark.parametrize(
    "argv, yaml_text, message",
    [
        (["--steps", "1"], None, "the following arguments are required: --model"),  # no default: required
        (["--model", "m", "--lora", "maybe"], None, "argument --lora"),  # not a boolean
        (["--model", "m", "--steps", "0"], None, "steps=0 must be >= 1 (--steps)"),  # the dataclass's own check
        (["--model", "m", "--bogus", "1"], None, "--bogus"),  # an unknown flag is named
        (["--model", "m"], "stpes: 9\n", "c.yaml: unknown key 'stpes'"),  # a typo in the file names file and key
        (["--model", "m"], "steps: nine\n", "c.yaml: key 'steps' should be int, got 'nine'"),  # wrong type
        (["--model", "m"], "lora: 1\n", "key 'lora' should be bool"),  # 1 is no boolean
        (["--model", "m"], "[1, 2]\n", "must be a YAML mapping"),
    ],
)
def test_step_parser_errors_are_one_line_with_status_2(argv, yaml_text, message, tmp_path, capsys):
    from components.common.cli import launch

    if yaml_text is not None:
        (tmp_path / "c.yaml").write_text(yaml_text)
        argv = [*argv, "--config", str(tmp_path / "c.yaml")]
    ran = []
    assert launch(_parser(), lambda cfg, io: ran.append(1), argv) == 2 and not ran
    err = capsys.readouterr().err
    assert err.startswith("prog: error: ") and message in err and err.count("\n") == 1


def test_launch_turns_bad_input_into_one_line(capsys):
    from components.common.cli import launch

    def run(cfg, io):
        raise FileNotFoundError(f"{io.model}: no such file")

    assert launch(_parser(), run, ["--model", "/data/x.csv"]) == 2
    assert capsys.readouterr().err == "prog: error: /data/x.csv: no such file\n"


def test_every_launcher_takes_config(tmp_path):
    """Every step's launcher is a StepParser over its config and IO dataclasses, so `--config` works on each."""
    import importlib

    from components.common.cli import StepParser

    for step in ("curate", "probe", "diagnose", "sft", "grpo", "evaluate"):
        parser = importlib.import_module(f"components.{step}.__main__").make_parser()
        assert isinstance(parser, StepParser) and len(parser.dataclass_types) == 2, step
        assert "--config" in parser.format_help(), step


@pytest.mark.parametrize("step", ["curate", "probe", "diagnose", "sft", "grpo", "evaluate"])
def test_every_launcher_prints_help(step, capsys):
    # --help renders every flag's help text (argparse %-formats it: a bare "95%" once broke `medbridge diagnose --help`).
    import importlib

    from pipelines.cli import main

    assert importlib.import_module(f"components.{step}.__main__").make_parser().format_help()
    with pytest.raises(SystemExit) as exit_:
        main([step, "--help"])
    assert exit_.value.code == 0
    assert "--" in capsys.readouterr().out
