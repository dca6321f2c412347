"""The diagnose-only pipeline the schedule runs: curate (reused from Kubeflow's cache) -> probe -> diagnose -> report.

    from pipelines.rediagnose import compile_rediagnose
    compile_rediagnose("rediagnose.yaml", load_profile("cluster", {"model_ref": "s3://models/ckpt-42"}))

It reuses the main DAG's step components unchanged, so a curate task with the same inputs as an earlier run is a
cache hit (Kubeflow keys its cache on the component and its inputs, not on the pipeline), and nothing trains: a
checkpoint is trained only when a person approves it (`medbridge submit --train`). The last task renders the run
report from the diagnosis, the probe and the curation report (no trained model, so no benchmark or transfer
tables), and, given `publish_uri`, uploads the diagnosis and the report there, where `medbridge trend` reads them.
"""


import dataclasses

from kfp import dsl
from kfp.dsl import HTML, Artifact, Input, Output

from components.common.images import CPU_IMAGE
from components.curate.component import curate
from components.diagnose.component import diagnose
from components.probe.component import probe
from pipelines.params import PipelineParams
from pipelines.pipeline import LOCAL, ClusterSettings, _place

PIPELINE_NAME = "medbridge-rediagnose"
# The pipeline parameters this DAG reads (a subset of PipelineParams) plus where to publish the diagnosis.
PARAMS = (
    "model_ref", "labeller_model", "medmnist_root", "pmc_vqa_root", "flags", "rl_size", "include_none",
    "diag_per_class", "eval_per_class", "sft_per_class", "pooling", "probe_epochs", "image_size", "k", "tau",
    "prompt_format", "max_new_tokens", "temperature", "top_p", "backend", "force_branch", "batch_size", "seed",
    "benchmarks_root", "benchmarks", "target_diag_per_modality", "chance_ceiling", "min_pixels", "max_pixels",
    "judge_model", "judge_mode",
)
PRIVATE_ENV = "MEDBRIDGE_PRIVATE"
_D = PipelineParams()


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def rediagnosis_report(
    model_ref: str,
    diagnosis: Input[Artifact],
    probe_report: Input[Artifact],
    curation_report: Input[Artifact],
    publish_uri: str,
    report: Output[HTML],
):
    """The run report of a diagnose-only run; publishes the diagnosis and the report to `publish_uri` when given."""
    from pipelines.rediagnose_report import main

    rc = main([
        "--model-ref", model_ref,
        "--diagnosis", diagnosis.path,
        "--probe-report", probe_report.path,
        "--curation-report", curation_report.path,
        "--publish-uri", publish_uri,
        "--out", report.path,
    ])
    if rc != 0:
        raise RuntimeError(f"python -m pipelines.rediagnose_report exited with status {rc}")


def arguments(params: PipelineParams, publish_uri: str = "") -> dict:
    """The run arguments of this pipeline for `params` (Kubeflow refuses parameters a pipeline does not declare)."""
    values = dataclasses.asdict(params)
    return {**{k: values[k] for k in PARAMS}, "publish_uri": publish_uri}


def make_rediagnose_pipeline(settings: ClusterSettings = LOCAL, private: bool = False):
    """The pipeline function; `private` runs the diagnosis and the report with the privacy flag on."""

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Re-diagnose a checkpoint (Pass@K vs Acc@1, bridge/sharpen decision) without training it.",
    )
    def medbridge_rediagnose(
        model_ref: str = _D.model_ref,
        labeller_model: str = _D.labeller_model,
        medmnist_root: str = _D.medmnist_root,
        pmc_vqa_root: str = _D.pmc_vqa_root,
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
        batch_size: int = _D.batch_size,
        seed: int = _D.seed,
        benchmarks_root: str = _D.benchmarks_root,
        benchmarks: str = _D.benchmarks,
        target_diag_per_modality: int = _D.target_diag_per_modality,
        chance_ceiling: float = _D.chance_ceiling,
        min_pixels: int = _D.min_pixels,
        max_pixels: int = _D.max_pixels,
        judge_model: str = _D.judge_model,
        judge_mode: str = _D.judge_mode,
        publish_uri: str = "",
    ):
        cur = curate(
            medmnist_root=medmnist_root, pmc_vqa_root=pmc_vqa_root, flags=flags, seed=seed, rl_size=rl_size,
            include_none=include_none, labeller_model=labeller_model, diag_per_class=diag_per_class,
            eval_per_class=eval_per_class, sft_per_class=sft_per_class,
            target_diag_per_modality=target_diag_per_modality, benchmarks_root=benchmarks_root, benchmarks=benchmarks,
        ).set_display_name("1 curate (cached)")
        _place(cur, settings, settings.infer_gpus, "96Gi")  # cached: the same inputs reuse the last curation
        prb = probe(
            model_ref=model_ref, medmnist_data=cur.outputs["medmnist_data"], flags=flags, pooling=pooling,
            epochs=probe_epochs, image_size=image_size, batch_size=batch_size, seed=seed,
        ).set_display_name("2 probe vision")
        _place(prb, settings, settings.infer_gpus, "64Gi")
        dia = diagnose(  # the same harness and the same deciding slice as the main DAG
            model_ref=model_ref, diag_set=cur.outputs["diag_set"], rl_diag_set=cur.outputs["rl_diag_set"],
            probe_report=prb.outputs["probe_report"], k=k, tau=tau, chance_ceiling=chance_ceiling,
            prompt_format=prompt_format, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
            backend=backend, min_pixels=min_pixels, max_pixels=max_pixels, judge_model=judge_model,
            judge_mode=judge_mode, force_branch=force_branch, seed=seed,
        ).set_display_name("3 diagnose support")
        _place(dia, settings, settings.infer_gpus, "64Gi", cache=False)
        rep = rediagnosis_report(
            model_ref=model_ref, diagnosis=dia.outputs["diagnosis"], probe_report=prb.outputs["probe_report"],
            curation_report=cur.outputs["curation_report"], publish_uri=publish_uri,
        ).set_display_name("4 report")
        _place(rep, settings, 0, "4Gi", cache=False)
        if private:
            for task in (dia, rep):
                task.set_env_variable(PRIVATE_ENV, "1")

    return medbridge_rediagnose


def compile_rediagnose(out_path: str, params: "PipelineParams | None" = None, *, private: bool = False,
                       gpu: bool = True) -> str:
    """Write the diagnose-only pipeline's spec to `out_path`, with `params` as the parameters' defaults."""
    import tempfile
    from pathlib import Path

    from kfp import compiler

    from components.common.io import atomic_write_text

    params = params or PipelineParams()
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "pipeline.yaml"
        compiler.Compiler().compile(
            make_rediagnose_pipeline(ClusterSettings() if gpu else LOCAL, private=private),
            str(spec),
            pipeline_parameters=arguments(params),
        )
        atomic_write_text(out_path, spec.read_text())
    return out_path
