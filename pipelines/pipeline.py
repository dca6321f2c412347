"""The MedBridge DAG: curate -> probe -> diagnose -> (bridge: sft -> rediagnose -> grpo | stop; sharpen: grpo)
-> evaluate -> publish.

    medbridge compile --profile cluster --out pipeline.yaml

The branch is chosen by the string the diagnose step returns (components.diagnose.decision.decide, a tested pure
function of the chance-corrected Pass@K interval on the held-out slice of the distribution RL trains on, and tau).
In the bridge branch the SFT model is diagnosed again on the same sets and the gate it returns
(components.diagnose.decision.gate_after_bridge) runs GRPO ("proceed") or ends the run with a report of the numbers
("stop"). Each path ends with its own evaluate task, so no step ever needs `dsl.OneOf` over artifacts: the DAG runs
unchanged under kfp.local and on a cluster.
"""


from dataclasses import dataclass

from kfp import dsl

from components.curate.component import curate
from components.diagnose.component import diagnose, rediagnose
from components.evaluate.component import evaluate
from components.fingerprint.component import fingerprint
from components.grpo.component import grpo
from components.probe.component import probe
from components.publish.component import publish
from components.sft.component import sft
from pipelines.params import PipelineParams

PIPELINE_NAME = "medbridge"
_D = PipelineParams()


@dataclass(frozen=True)
class Placement:
    """How one step's pod is sized and kept alive on a cluster (see `STEPS` for every step's values)."""

    cpu: str  # CPU request (no CPU limit: limits throttle data loading for no benefit)
    scratch: str  # local scratch at /scratch (TMPDIR): an emptyDir of at most this size
    retries: int  # re-runs after a failure (pod eviction, node loss, a transient S3 error), with backoff
    timeout_s: int  # the pod's activeDeadlineSeconds: a hung step fails instead of holding GPUs forever
    gpu_product: str = ""  # ClusterSettings field naming the GPU model this step needs ("" = any GPU node)


H = 3600
# Per step, keyed by the component's name. Training retries once (it resumes from its checkpoints); the others
# are idempotent (outputs are written whole or not at all) and retry twice or three times.
STEPS: dict[str, Placement] = {
    "fingerprint": Placement(cpu="500m", scratch="1Gi", retries=3, timeout_s=H // 4),
    "curate": Placement(cpu="8", scratch="100Gi", retries=2, timeout_s=12 * H, gpu_product="labeller_gpu_product"),
    "probe": Placement(cpu="8", scratch="50Gi", retries=2, timeout_s=6 * H),
    "diagnose": Placement(cpu="8", scratch="50Gi", retries=2, timeout_s=12 * H),
    "rediagnose": Placement(cpu="8", scratch="50Gi", retries=2, timeout_s=12 * H),  # the SFT model, same harness
    "sft": Placement(cpu="16", scratch="200Gi", retries=1, timeout_s=48 * H, gpu_product="train_gpu_product"),
    "grpo": Placement(cpu="16", scratch="200Gi", retries=1, timeout_s=72 * H, gpu_product="train_gpu_product"),
    "evaluate": Placement(cpu="8", scratch="50Gi", retries=2, timeout_s=12 * H),
    "publish": Placement(cpu="2", scratch="1Gi", retries=3, timeout_s=6 * H),
    "subset": Placement(cpu="2", scratch="20Gi", retries=2, timeout_s=H),  # the study: per-task train/val subsets
    "study-report": Placement(cpu="4", scratch="10Gi", retries=2, timeout_s=2 * H),
    "rediagnosis-report": Placement(cpu="2", scratch="5Gi", retries=2, timeout_s=H),  # the diagnose-only pipeline
}


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
    # GPU node selection: the label NVIDIA GPU feature discovery puts on GPU nodes, and the GPU model the 32B
    # labeller (curate) and the training steps need ("" = any GPU node). `medbridge compile --train-gpu-product`.
    gpu_product_label: str = "nvidia.com/gpu.product"
    train_gpu_product: str = "NVIDIA-H100-80GB-HBM3"
    labeller_gpu_product: str = "NVIDIA-H100-80GB-HBM3"
    shm_size: str = "16Gi"  # /dev/shm of GPU tasks (NCCL, dataloader workers, vLLM); counts against the memory limit


LOCAL = ClusterSettings(gpu=False)


def _place(task, settings: ClusterSettings, gpus: int, memory: str, cache: bool = True):
    """Resources, retries, timeout, node selection, secrets, volumes and caching policy of one task (its component's
    name picks its `STEPS` entry)."""
    task.set_caching_options(cache)
    if not settings.gpu:
        return task
    from kfp import kubernetes

    step = STEPS[task.component_spec.name]
    task.set_retry(num_retries=step.retries, backoff_duration="60s", backoff_factor=2.0, backoff_max_duration="3600s")
    kubernetes.set_timeout(task, step.timeout_s)
    task.set_cpu_request(step.cpu).set_memory_request(memory).set_memory_limit(memory)
    kubernetes.empty_dir_mount(task, volume_name="scratch", mount_path="/scratch", size_limit=step.scratch)
    task.set_env_variable("TMPDIR", "/scratch")
    if gpus:
        task.set_accelerator_type(settings.accelerator).set_accelerator_limit(gpus)
        kubernetes.add_toleration(task, key=settings.gpu_toleration_key, operator="Exists", effect="NoSchedule")
        product = getattr(settings, step.gpu_product) if step.gpu_product else ""
        if product:
            kubernetes.add_node_selector(task, label_key=settings.gpu_product_label, label_value=product)
        kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=settings.shm_size)
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
    # Lineage: run id, task name and image into every record; the signing key when its Secret exists.
    from pipelines.lineage_env import add_lineage_env

    add_lineage_env(task)
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
        chance_ceiling: float = _D.chance_ceiling,
        min_pixels: int = _D.min_pixels,
        max_pixels: int = _D.max_pixels,
        judge_model: str = _D.judge_model,
        judge_mode: str = _D.judge_mode,
        target_diag_per_modality: int = _D.target_diag_per_modality,
        force_rl: bool = _D.force_rl,
        publish_uri: str = _D.publish_uri,
    ):
        # Content fingerprints of the cached tasks' remote inputs: their cache keys follow content, not names.
        data_fp = fingerprint(
            step="curate", medmnist_root=medmnist_root, pmc_vqa_root=pmc_vqa_root, labeller_model=labeller_model
        ).set_display_name("0 fingerprint curation inputs")
        _place(data_fp, settings, 0, "1Gi", cache=False)
        model_fp = fingerprint(step="probe", model_ref=model_ref).set_display_name("0 fingerprint model")
        _place(model_fp, settings, 0, "1Gi", cache=False)

        # One measurement harness for the diagnosis, the re-diagnosis and the evaluation.
        harness = dict(
            k=k, prompt_format=prompt_format, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
            backend=backend, min_pixels=min_pixels, max_pixels=max_pixels, judge_model=judge_model,
            judge_mode=judge_mode, chance_ceiling=chance_ceiling, seed=seed,
        )
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
            target_diag_per_modality=target_diag_per_modality,
            benchmarks_root=benchmarks_root,
            benchmarks=benchmarks,
            cache_fingerprint=data_fp.output,
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
            cache_fingerprint=model_fp.output,
        ).set_display_name("2 probe vision")
        _place(prb, settings, settings.infer_gpus, "64Gi")

        dia = diagnose(
            model_ref=model_ref,
            diag_set=cur.outputs["diag_set"],
            rl_diag_set=cur.outputs["rl_diag_set"],
            probe_report=prb.outputs["probe_report"],
            tau=tau,
            force_branch=force_branch,
            **harness,
        ).set_display_name("3 diagnose support")
        _place(dia, settings, settings.infer_gpus, "64Gi", cache=False)

        def _grpo(init_model=None):
            extra = {"init_model": init_model} if init_model is not None else {}
            task = grpo(
                model_ref=model_ref,
                rl_set=cur.outputs["rl_set"],
                watch_set=cur.outputs["rl_diag_set"],  # the guard watches the slice the branch was decided on
                diagnosis=dia.outputs["diagnosis"],
                recipe=grpo_recipe,
                overrides=grpo_overrides,
                prompt_format=prompt_format,
                seed=seed,
                **extra,
            ).set_display_name("5 sharpen (GRPO)")
            return _place(task, settings, settings.train_gpus, "256Gi", cache=False)

        def _evaluate(final_model, final_stage="rl", **extra):
            task = evaluate(
                model=final_model,
                base_model_ref=model_ref,
                eval_set=cur.outputs["eval_set"],
                diagnosis=dia.outputs["diagnosis"],
                probe_report=prb.outputs["probe_report"],
                curation_report=cur.outputs["curation_report"],
                benchmarks_root=benchmarks_root,
                benchmarks=benchmarks,
                train_task=train_task,
                final_stage=final_stage,
                **harness,
                **extra,
            ).set_display_name("6 evaluate")
            return _place(task, settings, settings.infer_gpus, "64Gi", cache=False)

        def _publish(final_model, evaluated):
            task = publish(
                model=final_model,
                results=evaluated.outputs["results"],
                report=evaluated.outputs["report"],
                diagnosis=dia.outputs["diagnosis"],
                curation_report=cur.outputs["curation_report"],
                publish_uri=publish_uri,
            ).set_display_name("7 publish")
            return _place(task, settings, 0, "8Gi", cache=False)

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
            rd = rediagnose(
                model=bridge.outputs["model"],
                diag_set=cur.outputs["diag_set"],
                rl_diag_set=cur.outputs["rl_diag_set"],
                tau=tau,
                force_rl=force_rl,
                **harness,
            ).set_display_name("4b re-diagnose after the bridge")
            _place(rd, settings, settings.infer_gpus, "64Gi", cache=False)
            with dsl.If(rd.outputs["Output"] == "proceed", name="support-after-bridge"):
                rl = _grpo(init_model=bridge.outputs["model"])
                final = rl.outputs["model"]
                _publish(final, _evaluate(final, sft_model=bridge.outputs["model"], rediagnosis=rd.outputs["diagnosis"]))
            with dsl.Else(name="support-still-below-tau"):
                final = bridge.outputs["model"]  # the run stops before RL: the bridged model is the run's model
                _publish(final, _evaluate(final, final_stage="sft", rediagnosis=rd.outputs["diagnosis"]))
        with dsl.Else(name="support-at-least-tau"):
            final = _grpo().outputs["model"]
            _publish(final, _evaluate(final))

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
