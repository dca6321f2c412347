"""Kubeflow component for the curate step: maps artifacts and parameters to `python -m components.curate` flags."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components.common.images import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def curate(
    medmnist_root: str,
    pmc_vqa_root: str,
    flags: str,
    seed: int,
    rl_size: int,
    include_none: bool,
    labeller_model: str,
    diag_per_class: int,
    eval_per_class: int,
    sft_per_class: int,
    target_diag_per_modality: int,
    benchmarks_root: str,
    benchmarks: str,
    medmnist_data: Output[Dataset],
    diag_set: Output[Dataset],
    eval_set: Output[Dataset],
    sft_set: Output[Dataset],
    rl_set: Output[Dataset],
    rl_diag_set: Output[Dataset],
    curation_report: Output[Artifact],
    cache_fingerprint: str = "",  # content of the remote inputs (components/fingerprint): part of KFP's cache key only
):
    """Curate: validated MedMNIST npz copy, diagnosis/eval/SFT MCQ sets, modality-balanced PMC-VQA RL set and its
    held-out diagnosis slice, evaluation questions kept out of training, report."""
    from components.curate.__main__ import main

    rc = main([
        "--medmnist-root", medmnist_root,
        "--pmc-vqa-root", pmc_vqa_root,
        "--flags", flags,
        "--seed", str(seed),
        "--rl-size", str(rl_size),
        "--include-none", str(include_none),
        "--labeller-model", labeller_model,
        "--diag-per-class", str(diag_per_class),
        "--eval-per-class", str(eval_per_class),
        "--sft-per-class", str(sft_per_class),
        "--target-diag-per-modality", str(target_diag_per_modality),
        "--benchmarks-root", benchmarks_root,
        "--benchmarks", benchmarks,
        "--out-medmnist-data", medmnist_data.path,
        "--out-diag-set", diag_set.path,
        "--out-eval-set", eval_set.path,
        "--out-sft-set", sft_set.path,
        "--out-rl-set", rl_set.path,
        "--out-rl-diag-set", rl_diag_set.path,
        "--out-curation-report", curation_report.path,
    ])
    if rc != 0:
        raise RuntimeError(f"curate launcher exited with status {rc}")


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def subset(
    data: Input[Dataset],
    tasks: str,
    max_records: int,
    seed: int,
    out: Output[Dataset],
):
    """One task's questions of a curated MCQ dataset, as a dataset of their own (the RQ3 study's per-task sets)."""
    from components.curate.subset import main

    rc = main(["--data", data.path, "--tasks", tasks, "--max-records", str(max_records), "--seed", str(seed),
               "--out", out.path])
    if rc != 0:
        raise RuntimeError(f"subset launcher exited with status {rc}")
