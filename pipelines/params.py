"""Pipeline parameters: one dataclass, loaded from a commented YAML profile (pipelines/profiles/*.yaml).

    from pipelines.params import load_profile
    params = load_profile("demo", overrides={"tau": 0.6})

Every field is a parameter of the compiled Kubeflow pipeline; the profile supplies its default value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
BRANCHES = ("auto", "bridge", "sharpen")


def _help(text: str, default: Any) -> Any:
    return field(default=default, metadata={"help": text})


@dataclass
class PipelineParams:
    # Inputs: Hugging Face id, local directory or s3:// URI.
    model_ref: str = _help("checkpoint to diagnose and post-train", "Qwen/Qwen2.5-VL-7B-Instruct")
    labeller_model: str = _help("VLM that labels PMC-VQA modalities", "Qwen/Qwen2.5-VL-32B-Instruct")
    medmnist_root: str = _help("directory or s3:// prefix with MedMNIST .npz files", "s3://medbridge-data/medmnist")
    pmc_vqa_root: str = _help("directory or s3:// prefix with PMC-VQA CSV + images", "s3://medbridge-data/pmc-vqa")
    benchmarks_root: str = _help("directory or s3:// prefix with the evaluation benchmarks", "s3://medbridge-data/benchmarks")
    # Curation.
    flags: str = _help("MedMNIST tasks (comma-separated flags, or 'all')", "all")
    rl_size: int = _help("questions in the modality-balanced PMC-VQA RL set", 8000)
    include_none: bool = _help("keep modality 'none' in the balanced set", False)
    diag_per_class: int = _help("diagnosis questions per class (val split)", 20)
    eval_per_class: int = _help("evaluation questions per class (test split)", 50)
    sft_per_class: int = _help("SFT pool questions per class (train split)", 500)
    # Probe.
    pooling: str = _help("feature pooling over visual tokens: mean or max", "mean")
    probe_epochs: int = _help("linear-probe epochs (SGD lr 0.1, cosine)", 20)
    image_size: int = _help("image side in pixels for the probe", 224)
    # Diagnosis.
    k: int = _help("samples per question for Pass@K", 16)
    tau: float = _help("support threshold on Pass@K: below it, bridge with SFT", 0.5)
    prompt_format: str = _help("think, direct or scaffold", "think")
    max_new_tokens: int = _help("longest completion when sampling", 512)
    temperature: float = _help("sampling temperature", 0.7)
    top_p: float = _help("nucleus top-p", 0.9)
    backend: str = _help("sampling backend: vllm or transformers", "vllm")
    force_branch: str = _help("auto, or force bridge/sharpen (recorded as an operator override)", "auto")
    # Training: every setting of the bridge (SFT) and sharpen (GRPO) steps lives in the step's recipe, a commented
    # YAML in configs/ (components.common.recipes); the pipeline passes only prompt_format, seed and, to the bridge,
    # labeller_model as the teacher that writes its rationales. `*_overrides` is a YAML mapping of recipe fields
    # applied on top, e.g. --set grpo_overrides='{max_steps: 100, watch_every_steps: 50}'.
    sft_recipe: str = _help("recipe of the bridge (SFT) step: a configs/ name or a YAML path", "sft_qwen25vl7b_full")
    sft_overrides: str = _help("YAML mapping of SFT recipe fields to override, e.g. '{max_steps: 50}'", "")
    grpo_recipe: str = _help("recipe of the sharpen (GRPO) step: a configs/ name or a YAML path", "grpo_qwen25vl7b_care")
    grpo_overrides: str = _help("YAML mapping of GRPO recipe fields to override, e.g. '{lora: true, deepspeed: false}'", "")
    batch_size: int = _help("per-device batch size for feature extraction (probe)", 8)
    # Evaluation.
    benchmarks: str = _help("benchmarks to score", "pmc-vqa,mmmu-med,medxpertqa-mm,pathvqa,slake,vqa-rad")
    train_task: str = _help("task the post-training targets, for the transfer regimes", "pmc-vqa")
    seed: int = _help("seed for every step", 0)
    # Measurement harness: the diagnosis, the re-diagnosis, the evaluation and the GRPO support guard ask and read
    # the same way (components.common.harness). The paper's code: 2,048 new tokens, images between 1280*28*28 and
    # 16384*28*28 pixels, answers verified by Qwen2.5-VL-32B.
    chance_ceiling: float = _help("chance correction: per question, k is the largest whose guessing pass@k stays <= this", 0.5)
    min_pixels: int = _help("smallest image area after resizing, in pixels (0 = the processor's own)", 0)
    max_pixels: int = _help("largest image area after resizing, in pixels (0 = the processor's own)", 0)
    judge_model: str = _help("LLM judge of the answers (empty = the parser alone)", "")
    judge_mode: str = _help("unreadable (judge what the parser cannot read) or all (judge every answer)", "unreadable")
    # Diagnosis on the distribution RL trains on, and the gate after the bridge.
    target_diag_per_modality: int = _help("held-out PMC-VQA diagnosis questions per modality (rl_diag_set)", 25)
    force_rl: bool = _help("run GRPO after the bridge even when the re-diagnosis says stop (recorded as forced)", False)
    # Publishing: where the chosen model, its report, lineage and model card are copied once the run is done
    # (components/publish): <publish_uri>/medbridge-<model hash>/. Empty = keep them in KFP's artifact store only.
    publish_uri: str = _help("s3:// prefix the final model, report, lineage and model card are published under", "")

    def __post_init__(self):
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"tau={self.tau} is outside [0, 1]; it is a threshold on Pass@K, e.g. tau: 0.5")
        if self.force_branch not in BRANCHES:
            raise ValueError(f"force_branch={self.force_branch!r}; choose one of {', '.join(BRANCHES)}")
        if self.k < 1:
            raise ValueError(f"k={self.k} must be >= 1 (Pass@K needs at least one sample per question)")
        if not 0.0 < self.chance_ceiling < 1.0:
            raise ValueError(f"chance_ceiling={self.chance_ceiling} must lie in (0, 1), e.g. 0.5")
        if self.judge_mode not in ("unreadable", "all"):
            raise ValueError(f"judge_mode={self.judge_mode!r}; choose unreadable or all")
        for name in ("rl_size", "diag_per_class", "eval_per_class", "sft_per_class", "target_diag_per_modality"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        for name in ("sft_overrides", "grpo_overrides"):
            check_overrides(name, getattr(self, name))

    def as_kfp_arguments(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Recipe fields the pipeline sets itself (they must agree with the diagnosis and evaluation): not overridable.
PIPELINE_SET_FIELDS = ("prompt_format", "seed")


def check_overrides(name: str, text: str) -> None:
    """`text` is a YAML mapping (or empty) that names no field the pipeline passes itself."""
    if not text.strip():
        return
    from components.common.recipes import override_flags

    flags = override_flags(text, name)
    for field_name in PIPELINE_SET_FIELDS:
        if f"--{field_name.replace('_', '-')}" in flags[::2]:
            raise ValueError(f"{name}: {field_name!r} is a pipeline parameter (set it with --set {field_name}=...), "
                             "not a recipe override")


def check_recipes(params: PipelineParams) -> None:
    """Parse each training step's recipe plus its overrides with the step's own launcher parser, as the task will:
    an unknown key, a wrong type or conflicting settings fail here, naming the file and the key."""
    from components.common.recipes import override_flags
    from components.grpo.__main__ import make_parser as grpo_parser
    from components.sft.__main__ import make_parser as sft_parser

    common = ["--prompt-format", params.prompt_format, "--seed", str(params.seed)]
    checks = (
        (sft_parser, params.sft_recipe, params.sft_overrides, "sft_overrides",
         ["--model", "m", "--sft-set", "s", "--diagnosis", "d", "--out", "o"]),
        (grpo_parser, params.grpo_recipe, params.grpo_overrides, "grpo_overrides",
         ["--model", "m", "--rl-set", "r", "--watch-set", "w", "--diagnosis", "d", "--out", "o"]),
    )
    from components.common.recipes import resolve_config

    for make_parser, recipe, overrides, name, io in checks:
        try:
            resolve_config(recipe)
        except FileNotFoundError:
            if len(Path(recipe).parts) == 1:
                raise ValueError(f"{name.split('_')[0]}_recipe: {recipe!r} names no recipe in configs/ "
                                 "(or pass a YAML path)") from None
            continue  # a path that exists where the task runs (e.g. in the image), not here
        parser = make_parser()
        from components.common.cli import field_types

        known = field_types(parser.dataclass_types[0])  # the step's config; its inputs and outputs are the DAG's
        unknown = [f[2:].replace("-", "_") for f in override_flags(overrides, name)[::2]
                   if f[2:].replace("-", "_") not in known]
        if unknown:
            raise ValueError(f"{name}: unknown key {unknown[0]!r}; known keys: {', '.join(known)}")

        def error(message: str, _prog=parser.prog, _recipe=recipe):
            prefix = f"recipe {_recipe!r} ({_prog}): "
            raise ValueError(message if message.startswith(prefix) else prefix + message)

        parser.error = error
        parser.parse(["--config", recipe, *io, *common, *override_flags(overrides, name)])


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def profile_path(name_or_path: str) -> Path:
    """A profile name from pipelines/profiles, or a path to a YAML file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"profile {name_or_path!r} not found; available: {', '.join(available_profiles())}")
    return path


def load_profile(name_or_path: str, overrides: dict[str, Any] | None = None) -> PipelineParams:
    """Read a profile YAML (a name from pipelines/profiles or a path) into validated PipelineParams; `overrides`
    (typed values, e.g. from `parse_overrides`) replace the profile's. Errors name the file or the parameter."""
    from components.common.cli import field_types, read_yaml_values, yaml_type_errors

    data = read_yaml_values(profile_path(name_or_path), (PipelineParams,))
    overrides = dict(overrides or {})
    types = field_types(PipelineParams)
    for key in overrides:
        if key not in types:
            raise ValueError(f"unknown parameter {key!r}; known: {', '.join(types)}")
    errors = yaml_type_errors(overrides, types)
    if errors:
        raise ValueError(f"override {errors[0]}")
    data.update(overrides)
    params = PipelineParams(**{k: float(v) if types[k] is float else v for k, v in data.items()})
    check_recipes(params)
    return params


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """['tau=0.6', 'include_none=true'] -> {'tau': 0.6, 'include_none': True}: each value typed by its field, through the same
    dataclass parser the step launchers use (TRL's HfArgumentParser); a string parameter keeps its text as given."""
    import argparse

    from trl import TrlParser

    class _Parser(TrlParser):
        def error(self, message):
            raise ValueError(message)

    parser = _Parser([PipelineParams])
    for action in parser._actions:
        action.default = argparse.SUPPRESS  # only the parameters given come back
        action.required = False
    known = {f.name for f in dataclasses.fields(PipelineParams)}
    argv: list[str] = []
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected NAME=VALUE, e.g. --set tau=0.6")
        key, value = item.split("=", 1)
        if key not in known:
            raise ValueError(f"--set {key}: unknown parameter; known: {', '.join(sorted(known))}")
        argv.append(f"--{key}={value}")  # one token: a value starting with "-" stays a value
    try:
        namespace, rest = parser.parse_known_args(argv)
    except ValueError as e:
        raise ValueError(f"--set: {e}") from None
    return vars(namespace)
