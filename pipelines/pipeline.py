"""The MedBridge DAG: curate -> probe -> diagnose -> (bridge: sft -> grpo | sharpen: grpo) -> evaluate.

    medbridge compile --profile cluster --out pipeline.yaml

The branch is chosen by the string the diagnose step returns (components.diagnose.decision.decide, a tested pure
function of the measured Pass@K interval and tau). Each branch ends with its own evaluate task, so no step ever
needs `dsl.OneOf` over artifacts: the DAG runs unchanged under kfp.local and on a cluster.
"""


from dataclasses import dataclass

from kfp import dsl

from components.curate.component import curate
from components.diagnose.component import diagnose
from components.evaluate.component import evaluate
from components.grpo.component import grpo
from components.probe.component import probe
from components.sft.component import sft
from pipelines.params import PipelineParams

PIPELINE_NAME = "medbridge"
_D = PipelineParams()


@dataclass(frozen=True)
class ClusterSettings:
    """How tasks are placed on a Kubernetes GPU cluster (ignored by the local runner)."""

    gpu: bool = True
    accelerator: str = "nvidia.com/gpu"
    train_gpus: int = 4  # sft / grpo: the launcher starts one process per GPU it sees (accelerate launch)
    infer_gpus: int = 1  # curate (labeller), probe, diagnose, evaluate
    cache_pvc: str = "medbridge-cache"
    cache_mount: str = "/cache"
    s3_secret: str = "medbridge-s3"
    hf_secret: str = "medbridge-hf"
    gpu_toleration_key: str = "nvidia.com/gpu"


LOCAL = ClusterSettings(gpu=False)


def _place(task, settings: ClusterSettings, gpus: int, memory: str, cache: bool = True):
    """Resources, secrets, cache volume and caching policy of one task."""
    task.set_caching_options(cache)
    if not settings.gpu:
        return task
    from kfp import kubernetes

    task.set_memory_request(memory).set_memory_limit(memory)
    if gpus:
        task.set_accelerator_type(settings.accelerator).set_accelerator_limit(gpus)
        kubernetes.add_toleration(task, key=settings.gpu_toleration_key, operator="Exists", effect="NoSchedule")
    kubernetes.use_secret_as_env(
        task,
        secret_name=settings.s3_secret,
        secret_key_to_env={
            "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
            "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL",
        },
    )
    kubernetes.use_secret_as_env(task, secret_name=settings.hf_secret, secret_key_to_env={"HF_TOKEN": "HF_TOKEN"})
    kubernetes.mount_pvc(task, pvc_name=settings.cache_pvc, mount_path=settings.cache_mount)
    task.set_env_variable("MEDBRIDGE_CACHE", settings.cache_mount).set_env_variable("HF_HOME", f"{settings.cache_mount}/hf")
    return task


def make_pipeline(settings: ClusterSettings = LOCAL):
    """The pipeline function, with task placement for `settings` (LOCAL for kfp.local, ClusterSettings() for a cluster)."""

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Diagnose whether RL helps a medical VLM (Pass@K vs Acc@1), bridge with SFT or sharpen with GRPO, evaluate transfer.",
    )
    def medbridge(
        model_ref: str = _D.model_ref,
        labeller_model: str = _D.labeller_model,
        medmnist_root: str = _D.medmnist_root,
        pmc_vqa_root: str = _D.pmc_vqa_root,
        benchmarks_root: str = _D.benchmarks_root,
        flags: str = _D.flags,
        rl_size: int = _D.rl_size,
        include_none: bool = _D.include_none,
        diag_per_class: int = _D.diag_per_class,
        eval_per_class: int = _D.eval_per_class,
        sft_per_class: int = _D.sft_per_class,
        pooling: str = _D.pooling,
        probe_epochs: int = _D.probe_epochs,
        image_size: int = _D.image_size,
        k: int = _D.k,
        tau: float = _D.tau,
        prompt_format: str = _D.prompt_format,
        max_new_tokens: int = _D.max_new_tokens,
        temperature: float = _D.temperature,
        top_p: float = _D.top_p,
        backend: str = _D.backend,
        force_branch: str = _D.force_branch,
        sft_recipe: str = _D.sft_recipe,
        sft_overrides: str = _D.sft_overrides,
        grpo_recipe: str = _D.grpo_recipe,
        grpo_overrides: str = _D.grpo_overrides,
        batch_size: int = _D.batch_size,
        benchmarks: str = _D.benchmarks,
        train_task: str = _D.train_task,
        seed: int = _D.seed,
    ):
        cur = curate(
            medmnist_root=medmnist_root,
            pmc_vqa_root=pmc_vqa_root,
            flags=flags,
            seed=seed,
            rl_size=rl_size,
            include_none=include_none,
            labeller_model=labeller_model,
            diag_per_class=diag_per_class,
            eval_per_class=eval_per_class,
            sft_per_class=sft_per_class,
        ).set_display_name("1 curate")
        _place(cur, settings, settings.infer_gpus, "96Gi")

        prb = probe(
            model_ref=model_ref,
            medmnist_data=cur.outputs["medmnist_data"],
            flags=flags,
            pooling=pooling,
            epochs=probe_epochs,
            image_size=image_size,
            batch_size=batch_size,
            seed=seed,
        ).set_display_name("2 probe vision")
        _place(prb, settings, settings.infer_gpus, "64Gi")

        dia = diagnose(
            model_ref=model_ref,
            diag_set=cur.outputs["diag_set"],
            probe_report=prb.outputs["probe_report"],
            k=k,
            tau=tau,
            prompt_format=prompt_format,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            backend=backend,
            force_branch=force_branch,
            seed=seed,
        ).set_display_name("3 diagnose support")
        _place(dia, settings, settings.infer_gpus, "64Gi", cache=False)

        def _grpo(init_model=None):
            extra = {"init_model": init_model} if init_model is not None else {}
            task = grpo(
                model_ref=model_ref,
                rl_set=cur.outputs["rl_set"],
                watch_set=cur.outputs["diag_set"],
                diagnosis=dia.outputs["diagnosis"],
                recipe=grpo_recipe,
                overrides=grpo_overrides,
                prompt_format=prompt_format,
                seed=seed,
                **extra,
            ).set_display_name("5 sharpen (GRPO)")
            return _place(task, settings, settings.train_gpus, "256Gi", cache=False)

        def _evaluate(trained):
            task = evaluate(
                model=trained.outputs["model"],
                base_model_ref=model_ref,
                eval_set=cur.outputs["eval_set"],
                diagnosis=dia.outputs["diagnosis"],
                probe_report=prb.outputs["probe_report"],
                curation_report=cur.outputs["curation_report"],
                benchmarks_root=benchmarks_root,
                benchmarks=benchmarks,
                k=k,
                prompt_format=prompt_format,
                max_new_tokens=max_new_tokens,
                train_task=train_task,
                seed=seed,
            ).set_display_name("6 evaluate")
            return _place(task, settings, settings.infer_gpus, "64Gi", cache=False)

        with dsl.If(dia.outputs["Output"] == "bridge", name="support-below-tau"):
            bridge = sft(
                model_ref=model_ref,
                sft_set=cur.outputs["sft_set"],
                diagnosis=dia.outputs["diagnosis"],
                teacher_model=labeller_model,  # writes the think-format rationales, given the correct answer
                recipe=sft_recipe,
                overrides=sft_overrides,
                prompt_format=prompt_format,
                seed=seed,
            ).set_display_name("4 bridge (SFT)")
            _place(bridge, settings, settings.train_gpus, "256Gi", cache=False)
            _evaluate(_grpo(init_model=bridge.outputs["model"]))
        with dsl.Else(name="support-at-least-tau"):
            _evaluate(_grpo())

    return medbridge


def compile_pipeline(out_path: str, params: "PipelineParams | None" = None, settings: "ClusterSettings | None" = None) -> str:
    """Write the pipeline spec YAML to `out_path` with `params` as the parameters' defaults."""
    import dataclasses

    from kfp import compiler

    from components.common.io import atomic_write_text

    import tempfile
    from pathlib import Path

    params = params or PipelineParams()
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "pipeline.yaml"
        compiler.Compiler().compile(
            make_pipeline(settings or ClusterSettings()),
            str(spec),
            pipeline_parameters=dataclasses.asdict(params),
        )
        atomic_write_text(out_path, spec.read_text())
    return out_path
