"""The paper's RQ3 study as a second pipeline: when does RL help, and does it transfer?

    medbridge study                                   # demo profile, locally through kfp.local
    medbridge study --profile cluster --set bridged_model_ref=s3://models/octomed-7b --compile study.yaml

GRPO on OrganAMNIST, PathMNIST and OCTMNIST (their train splits; `study_tasks`), each from the base model and from a
bridged model: the bridge step's SFT output, or a given checkpoint (`bridged_model_ref`, e.g. OctoMed-7B as in the
paper). The runs are a `dsl.ParallelFor` over the tasks (each iteration trains and evaluates both starts); every run
is evaluated on the MedMNIST eval set (in-domain, within-modality: OrganC/OrganS, Pneumonia; cross-modality:
OCT->Path, OrganA->Path, OrganA->OCT) with Acc@1 and Pass@K before and after RL, and the study report collects them
into a transfer heatmap and the paper's pairs with paired intervals (components.evaluate.study). When the bridge's
SFT data includes a transfer target task, the report says so.

It reuses the main pipeline's components (curate, diagnose, sft, grpo, evaluate) and the same measurement harness;
its parameters are the profile's (pipelines/profiles/*.yaml) plus the study's own (`StudyParams`).
"""

import dataclasses
from dataclasses import dataclass, field
from typing import Any, List, Optional

from kfp import dsl

from components.curate.component import curate, subset
from components.diagnose.component import diagnose
from components.evaluate.component import evaluate, study_report
from components.grpo.component import grpo
from components.sft.component import sft
from pipelines.params import PipelineParams
from pipelines.pipeline import LOCAL, ClusterSettings, _place

STUDY_NAME = "medbridge-study"
STUDY_TASKS = ["organamnist", "pathmnist", "octmnist"]
# Profile parameters the study uses (same meaning as in the main pipeline).
SHARED = (
    "model_ref", "labeller_model", "medmnist_root", "pmc_vqa_root", "flags", "rl_size", "include_none",
    "diag_per_class", "eval_per_class", "sft_per_class", "target_diag_per_modality", "k", "tau", "prompt_format",
    "max_new_tokens", "temperature", "top_p", "backend", "chance_ceiling", "min_pixels", "max_pixels", "judge_model",
    "judge_mode", "sft_recipe", "sft_overrides", "grpo_recipe", "grpo_overrides", "batch_size", "seed",
)
OWN = ("study_tasks", "bridged_model_ref", "rl_max_records")


@dataclass
class StudyParams:
    """The study's parameters: the profile's (SHARED) and its own (OWN)."""

    profile: PipelineParams = field(default_factory=PipelineParams)
    study_tasks: list[str] = field(default_factory=lambda: list(STUDY_TASKS))
    bridged_model_ref: str = ""  # empty: bridge with the SFT step; else this checkpoint is the bridged model
    rl_max_records: int = 0  # GRPO questions per task, class-balanced (0 = the task's whole train subset)

    def __post_init__(self):
        from components.common.medmnist_tasks import parse_flags

        if not self.study_tasks:
            raise ValueError("study_tasks is empty; e.g. --set study_tasks=organamnist,pathmnist,octmnist")
        parse_flags(self.study_tasks)  # names an unknown task
        missing = [t for t in self.study_tasks if self.profile.flags != "all" and t not in parse_flags(self.profile.flags)]
        if missing:
            raise ValueError(f"study task(s) {', '.join(missing)} are not among flags={self.profile.flags!r}; add them")
        if self.rl_max_records < 0:
            raise ValueError(f"rl_max_records={self.rl_max_records} must be >= 0")

    def as_kfp_arguments(self) -> dict[str, Any]:
        args = {name: getattr(self.profile, name) for name in SHARED}
        return {**args, "study_tasks": list(self.study_tasks), "bridged_model_ref": self.bridged_model_ref,
                "rl_max_records": self.rl_max_records}


def parse_study_overrides(items: List[str]) -> "tuple[dict[str, Any], dict[str, Any]]":
    """(profile overrides, study overrides) from --set NAME=VALUE items: the study's own names are read here, the
    others by the main pipeline's parser (pipelines.params.parse_overrides)."""
    from pipelines.params import parse_overrides

    own: dict[str, Any] = {}
    rest = []
    for item in items:
        key, _, value = item.partition("=")
        if key == "study_tasks":
            own[key] = [t.strip() for t in value.split(",") if t.strip()]
        elif key == "bridged_model_ref":
            own[key] = value
        elif key == "rl_max_records":
            try:
                own[key] = int(value)
            except ValueError:
                raise ValueError(f"--set rl_max_records={value!r}: expected an integer") from None
        else:
            rest.append(item)
    return parse_overrides(rest), own


def load_study(profile: str, items: Optional[List[str]] = None, extra: Optional[dict] = None) -> StudyParams:
    from pipelines.params import load_profile

    overrides, own = parse_study_overrides(items or [])
    return StudyParams(load_profile(profile, {**overrides, **(extra or {})}), **own)


def make_study_pipeline(settings: ClusterSettings = LOCAL):
    """The study's pipeline function, with task placement for `settings`."""
    d = PipelineParams()

    @dsl.pipeline(name=STUDY_NAME, description="MedBridgeRL RQ3: GRPO per task from the base and from a bridged "
                  "model, in-domain / within-modality / cross-modality transfer of Acc@1 and Pass@K.")
    def medbridge_study(
        model_ref: str = d.model_ref,
        labeller_model: str = d.labeller_model,
        medmnist_root: str = d.medmnist_root,
        pmc_vqa_root: str = d.pmc_vqa_root,
        flags: str = d.flags,
        rl_size: int = d.rl_size,
        include_none: bool = d.include_none,
        diag_per_class: int = d.diag_per_class,
        eval_per_class: int = d.eval_per_class,
        sft_per_class: int = d.sft_per_class,
        target_diag_per_modality: int = d.target_diag_per_modality,
        k: int = d.k,
        tau: float = d.tau,
        prompt_format: str = d.prompt_format,
        max_new_tokens: int = d.max_new_tokens,
        temperature: float = d.temperature,
        top_p: float = d.top_p,
        backend: str = d.backend,
        chance_ceiling: float = d.chance_ceiling,
        min_pixels: int = d.min_pixels,
        max_pixels: int = d.max_pixels,
        judge_model: str = d.judge_model,
        judge_mode: str = d.judge_mode,
        sft_recipe: str = d.sft_recipe,
        sft_overrides: str = d.sft_overrides,
        grpo_recipe: str = d.grpo_recipe,
        grpo_overrides: str = d.grpo_overrides,
        batch_size: int = d.batch_size,
        seed: int = d.seed,
        study_tasks: List[str] = STUDY_TASKS,
        bridged_model_ref: str = "",
        rl_max_records: int = 0,
    ):
        harness = dict(
            k=k, prompt_format=prompt_format, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
            backend=backend, min_pixels=min_pixels, max_pixels=max_pixels, judge_model=judge_model,
            judge_mode=judge_mode, chance_ceiling=chance_ceiling, seed=seed,
        )
        cur = curate(
            medmnist_root=medmnist_root, pmc_vqa_root=pmc_vqa_root, flags=flags, seed=seed, rl_size=rl_size,
            include_none=include_none, labeller_model=labeller_model, diag_per_class=diag_per_class,
            eval_per_class=eval_per_class, sft_per_class=sft_per_class,
            target_diag_per_modality=target_diag_per_modality, benchmarks_root="", benchmarks="none",
        ).set_display_name("1 curate")
        _place(cur, settings, settings.infer_gpus, "96Gi")
        dia = diagnose(
            model_ref=model_ref, diag_set=cur.outputs["diag_set"], rl_diag_set=cur.outputs["rl_diag_set"], tau=tau,
            force_branch="auto", **harness,
        ).set_display_name("2 diagnose the base model")
        _place(dia, settings, settings.infer_gpus, "64Gi", cache=False)

        def runs(bridged: dict, evaluate_bridged: dict):
            """GRPO per task from the base and from the bridged model, each evaluated; the study report."""
            with dsl.ParallelFor(study_tasks, name="rq3-runs") as task:
                rl_set = subset(data=cur.outputs["sft_set"], tasks=task, max_records=rl_max_records, seed=seed)
                rl_set.set_display_name("3 task train split")
                watch = subset(data=cur.outputs["diag_set"], tasks=task, max_records=0, seed=seed)
                watch.set_display_name("3 task val split (support watch)")
                results = {}
                for start, extra, ev_extra in (("base", {}, {"base_model_ref": model_ref}),
                                               ("bridged", bridged, evaluate_bridged)):
                    g = grpo(
                        model_ref=extra.get("model_ref", model_ref), rl_set=rl_set.outputs["out"],
                        watch_set=watch.outputs["out"], diagnosis=dia.outputs["diagnosis"],
                        recipe=grpo_recipe, overrides=grpo_overrides, prompt_format=prompt_format, seed=seed,
                        **{n: v for n, v in extra.items() if n != "model_ref"},
                    ).set_display_name(f"4 GRPO from the {start} model")
                    _place(g, settings, settings.train_gpus, "256Gi", cache=False)
                    e = evaluate(
                        model=g.outputs["model"], eval_set=cur.outputs["eval_set"], benchmarks_root="",
                        benchmarks="none", train_task=task, final_stage="rl", **harness, **ev_extra,
                    ).set_display_name(f"5 evaluate ({start})")
                    _place(e, settings, settings.infer_gpus, "64Gi", cache=False)
                    results[start] = e
            rep = study_report(
                from_base=dsl.Collected(results["base"].outputs["results"]),
                from_bridged=dsl.Collected(results["bridged"].outputs["results"]),
                bridged_model_ref=bridged_model_ref,
            ).set_display_name("6 study report")
            _place(rep, settings, 0, "16Gi", cache=False)

        with dsl.If(bridged_model_ref == "", name="bridge-by-sft"):
            br = sft(
                model_ref=model_ref, sft_set=cur.outputs["sft_set"], diagnosis=dia.outputs["diagnosis"],
                teacher_model=labeller_model, recipe=sft_recipe, overrides=sft_overrides, prompt_format=prompt_format,
                seed=seed,
            ).set_display_name("2b bridge (SFT)")
            _place(br, settings, settings.train_gpus, "256Gi", cache=False)
            runs({"init_model": br.outputs["model"]}, {"base_model_ref": model_ref, "sft_model": br.outputs["model"]})
        with dsl.Else(name="bridge-given"):
            runs({"model_ref": bridged_model_ref}, {"base_model_ref": bridged_model_ref})

    return medbridge_study


def compile_study(out_path: str, params: StudyParams, settings: Optional[ClusterSettings] = None) -> str:
    """Write the study's pipeline spec YAML with `params` as the parameters' defaults."""
    import tempfile
    from pathlib import Path

    from kfp import compiler

    from components.common.io import atomic_write_text

    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "study.yaml"
        compiler.Compiler().compile(make_study_pipeline(settings or ClusterSettings()), str(spec),
                                    pipeline_parameters=params.as_kfp_arguments())
        atomic_write_text(out_path, spec.read_text())
    return out_path


@dataclass
class StudyRun:
    run_dir: Any
    report_html: Any
    report_md: Any
    study_json: Any
    seconds: float


def run_study_local(params: StudyParams, out_dir="runs", demo: bool = True) -> StudyRun:
    """Run the study with kfp.local; build the demo model and data first when `demo` is set."""
    import os
    import sys
    import time
    from pathlib import Path

    from kfp import local

    from pipelines.demo import build_demo_assets

    out_dir = Path(out_dir).resolve()
    root = out_dir / "kfp"
    root.mkdir(parents=True, exist_ok=True)
    if demo:
        print(f"[medbridge] building demo assets in {out_dir / 'demo-assets'}")
        assets = build_demo_assets(out_dir / "demo-assets", seed=params.profile.seed)
        assets.pop("benchmarks_root", None)
        params = dataclasses.replace(
            params, profile=dataclasses.replace(params.profile, labeller_model=assets["model_ref"], **assets))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    before = set(root.iterdir())
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    started = time.time()
    make_study_pipeline()(**params.as_kfp_arguments())
    new = [p for p in root.iterdir() if p not in before and p.name.startswith(f"{STUDY_NAME}-")]
    if not new:
        raise RuntimeError(f"kfp.local wrote no study run directory under {root}")
    run_dir = max(new, key=lambda p: p.stat().st_mtime)
    found = sorted(run_dir.glob("study-report*/study/report.html"))
    if not found:
        raise RuntimeError(f"{run_dir}: the study report step wrote no report")
    study = found[0].parent
    return StudyRun(run_dir, found[0], study / "report.md", study / "study.json", time.time() - started)
