"""Nothing the operator sets is silently dropped.

1. Every pipeline parameter is wired into some task of the compiled spec, and every parameter of every step's
   component reaches a flag of that step's launcher (the component is run with each parameter changed in turn and
   the launcher's argv is compared).
2. Every field of a training recipe reaches the launcher's config: the recipe the profile names, with any one field
   changed, parses (with the flags the component adds) to a config holding the changed value, except the fields the
   pipeline sets itself (prompt_format, seed), which hold the pipeline's values.
3. The compiled cluster spec's training tasks start accelerate with the recipe the profile names: the components'
   own source, taken from the compiled spec and run on a (simulated) 4-GPU node, relaunch the step through
   `accelerate launch --use_deepspeed --num_processes 4` with every setting of the recipe.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import re
from pathlib import Path

import pytest
import yaml

pytest.importorskip("kfp", reason="the component specs need the kfp SDK (absent on bare GPU test machines)")

from pipelines.params import PIPELINE_SET_FIELDS, PipelineParams, load_profile  # noqa: E402

STEPS = ("curate", "probe", "diagnose", "sft", "grpo", "evaluate")
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


class Captured(Exception):
    def __init__(self, argv):
        self.argv = list(argv)


class FakeArtifact:
    def __init__(self, path):
        self.path = str(path)

    def log_metric(self, *a):
        pass


def _component(step):
    module = importlib.import_module(f"components.{step}.component")
    return getattr(module, step).python_func


def _is_artifact(annotation) -> bool:
    text = str(annotation)
    return "InputAnnotation" in text or "OutputAnnotation" in text


def _baseline(step, func):
    """Keyword arguments for the component: fake artifacts, the demo profile's values for parameters."""
    demo = dataclasses.asdict(load_profile("demo"))
    aliases = {"recipe": f"{step}_recipe", "overrides": f"{step}_overrides", "epochs": "probe_epochs",
               "base_model_ref": "model_ref", "teacher_model": "labeller_model"}
    kwargs = {}
    for name, p in inspect.signature(func).parameters.items():
        if _is_artifact(p.annotation):
            kwargs[name] = None if p.default is None else FakeArtifact(f"/fake/{name}")
        else:
            key = aliases.get(name, name)
            kwargs[name] = demo[key] if key in demo else p.default
    return kwargs


def _argv(step, monkeypatch, **kwargs):
    def capture(argv=None):
        raise Captured(argv)

    monkeypatch.setattr(importlib.import_module(f"components.{step}.__main__"), "main", capture)
    with pytest.raises(Captured) as got:
        _component(step)(**kwargs)
    return got.value.argv


def _flags(step) -> set[str]:
    parser = importlib.import_module(f"components.{step}.__main__").make_parser()
    return {o for a in parser._actions for o in a.option_strings}


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 7
    if isinstance(value, float):
        return value * 3 + 0.5
    return f"{value}-changed"


@pytest.mark.parametrize("step", STEPS)
def test_every_component_parameter_reaches_a_launcher_flag(step, monkeypatch):
    func = _component(step)
    base = _baseline(step, func)
    base_argv = _argv(step, monkeypatch, **base)
    flags = _flags(step)
    for name, value in base.items():
        p = inspect.signature(func).parameters[name]
        if _is_artifact(p.annotation) and "Metrics" in str(p.annotation):
            continue  # filled from metrics.json after the launcher ran
        if name == "cache_fingerprint":
            continue  # by design only part of KFP's cache key (components/fingerprint), never read by the step
        if name == "overrides":
            argv = _argv(step, monkeypatch, **{**base, name: "{max_steps: 7}"})
            assert argv[-2:] == ["--max-steps", "7"], f"{step}.{name}: overrides do not reach the launcher"
            continue
        new = FakeArtifact(f"/fake/other-{name}") if _is_artifact(p.annotation) else _changed(value)
        argv = _argv(step, monkeypatch, **{**base, name: new})
        assert argv != base_argv, f"{step}.{name} does not reach the launcher's argv"
        if len(argv) == len(base_argv):
            diff = [i for i, (a, b) in enumerate(zip(argv, base_argv)) if a != b]
        else:  # an optional input given: its flag and value appended
            diff = [len(argv) - 1]
        for i in diff:
            assert argv[i - 1] in flags, f"{step}.{name} lands on {argv[i - 1]!r}, not a flag of the launcher"


def _task_inputs(spec) -> dict[str, set[str]]:
    """Pipeline parameter -> the component inputs it is wired to, over every DAG in the compiled spec."""
    wired: dict[str, set[str]] = {}
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    for dag in dags:
        for task_name, task in dag["tasks"].items():
            comp = task["componentRef"]["name"]
            if comp.startswith("comp-condition"):
                continue
            for inp, src in (task.get("inputs", {}).get("parameters") or {}).items():
                ref = src.get("componentInputParameter")
                if ref:
                    wired.setdefault(ref.removeprefix("pipelinechannel--"), set()).add(f"{comp}.{inp}")
    return wired


@pytest.fixture(scope="module")
def cluster_spec(tmp_path_factory):
    from pipelines.pipeline import ClusterSettings, compile_pipeline

    out = tmp_path_factory.mktemp("spec") / "pipeline.yaml"
    compile_pipeline(str(out), load_profile("cluster"), ClusterSettings())
    return next(yaml.safe_load_all(out.read_text()))


def test_every_pipeline_parameter_is_wired_into_a_task(cluster_spec):
    wired = _task_inputs(cluster_spec)
    missing = [f.name for f in dataclasses.fields(PipelineParams) if f.name not in wired]
    assert not missing, f"pipeline parameters no task consumes: {missing}"
    # The training steps get their settings from the recipes the profile names, and the labeller writes rationales.
    assert "comp-sft.recipe" in wired["sft_recipe"] and "comp-sft.teacher_model" in wired["labeller_model"]
    assert any(x.startswith("comp-grpo") and x.endswith(".recipe") for x in wired["grpo_recipe"])


def _field_change(cfg, name):
    """A valid recipe edit that changes `name` (with the companion changes a conflict check demands)."""
    v = getattr(cfg, name)
    if name == "lora":  # LoRA + ZeRO-3 is refused: turning LoRA on turns DeepSpeed off
        return {"lora": not v, **({"deepspeed": False, "offload_optimizer": False} if not v else {})}
    if name == "deepspeed":
        return {"deepspeed": not v, "lora": False, "offload_optimizer": False}
    if name == "offload_optimizer":
        return {"offload_optimizer": not v, "deepspeed": True, "lora": False}
    fixed = {"prompt_format": "scaffold" if v != "scaffold" else "direct",
             "rationales": "template" if v == "teacher" else "teacher",
             "top_p": 0.5, "confidence_upper_bound": 0.5, "warmup_ratio": 0.25, "lora_dropout": 0.25,
             "ema_decay": 0.5, "collapse_tolerance": 0.25, "rollout": "trl" if v != "trl" else "shared_prefix",
             "vllm_gpu_memory_utilization": 0.5}
    if name in fixed:
        return {name: fixed[name]}
    return {name: v + "-x" if isinstance(v, str) else _changed(v)}


@pytest.mark.parametrize("profile", ["cluster", "demo"])
@pytest.mark.parametrize("step", ["sft", "grpo"])
def test_every_recipe_field_reaches_the_launcher(step, profile, monkeypatch, tmp_path):
    params = load_profile(profile)
    base = _baseline(step, _component(step))
    base.update(recipe=getattr(params, f"{step}_recipe"), overrides="", prompt_format=params.prompt_format,
                seed=params.seed)
    argv = _argv(step, monkeypatch, **base)
    parser = importlib.import_module(f"components.{step}.__main__").make_parser()
    cfg, _ = parser.parse(argv)
    recipe_file = CONFIGS / f"{base['recipe']}.yaml"
    recipe = yaml.safe_load(recipe_file.read_text())
    # What the pipeline sets itself wins over the recipe; everything else comes from the recipe.
    assert {k for k in recipe if getattr(cfg, k) != recipe[k]} <= set(PIPELINE_SET_FIELDS)
    assert (cfg.prompt_format, cfg.seed) == (params.prompt_format, params.seed)
    for f in dataclasses.fields(cfg):
        if f.name in PIPELINE_SET_FIELDS:
            continue
        edit = _field_change(cfg, f.name)
        edited = tmp_path / f"{f.name}.yaml"
        edited.write_text(yaml.safe_dump({**recipe, **edit}))
        i = argv.index("--config")
        got, _ = parser.parse([*argv[:i + 1], str(edited), *argv[i + 2:]])
        assert getattr(got, f.name) == edit[f.name], f"recipe field {f.name} of {recipe_file.name} is dropped"


def _embedded_source(spec, step) -> str:
    executor = spec["deploymentSpec"]["executors"][f"exec-{step}"]
    return executor["container"]["command"][3]


@pytest.mark.parametrize("step", ["sft", "grpo"])
def test_compiled_training_tasks_start_accelerate_with_the_profiles_recipe(step, cluster_spec, monkeypatch, tmp_path):
    import components.common.launch as launch

    params = load_profile("cluster")
    monkeypatch.setenv("MEDBRIDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(launch.LAUNCHED_ENV, raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(launch, "visible_gpus", lambda: 4)  # the cluster's training node
    started = []

    def supervised(cmd, env=None):  # the training processes: record the command, write what rank 0 would
        started.append(cmd)
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps({"support_collapsed": False, "steps": 1, "final_loss": 1.0}))
        return 0

    monkeypatch.setattr(launch, "run_supervised", supervised)
    namespace: dict = {}
    # dont_inherit: the component's annotations must be evaluated as in its container, not as strings
    exec(compile(_embedded_source(cluster_spec, step), f"<compiled {step}>", "exec", dont_inherit=True), namespace)
    func = namespace[step]
    kwargs = {}
    for name, p in inspect.signature(func).parameters.items():
        if _is_artifact(p.annotation):
            kwargs[name] = None if p.default is None else FakeArtifact(tmp_path / name)
    comp_inputs = cluster_spec["components"][f"comp-{step}"]["inputDefinitions"]["parameters"]
    root_defaults = {k: v.get("defaultValue") for k, v in cluster_spec["root"]["inputDefinitions"]["parameters"].items()}
    aliases = {"recipe": f"{step}_recipe", "overrides": f"{step}_overrides", "teacher_model": "labeller_model"}
    hints = {n: p.annotation for n, p in inspect.signature(func).parameters.items()}
    for name in comp_inputs:  # the spec stores integers as JSON numbers; the KFP executor casts them back
        value = root_defaults[aliases.get(name, name)]
        kwargs[name] = int(value) if hints[name] is int else value
    assert kwargs["recipe"] == getattr(params, f"{step}_recipe")  # the spec carries the profile's recipe
    func(**kwargs)

    (cmd,) = started
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and "--use_deepspeed" in cmd
    assert cmd[cmd.index("--num_processes") + 1] == "4"
    child = cmd[cmd.index(f"components.{step}") + 1:]
    cfg, io = importlib.import_module(f"components.{step}.__main__").make_parser().parse(child)
    recipe = yaml.safe_load((CONFIGS / f"{kwargs['recipe']}.yaml").read_text())
    want = {**recipe, "prompt_format": params.prompt_format, "seed": params.seed, "num_processes": 4}
    assert {k: getattr(cfg, k) for k in want} == want  # every setting of the recipe reaches every process
    assert re.search(rf"/checkpoints/{step}-[0-9a-f]{{16}}$", io.checkpoint_dir)  # keyed by the task fingerprint
