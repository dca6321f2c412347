"""Kubeflow component for the fingerprint step: the content fingerprint of a cached task's remote inputs, passed to
that task as its `cache_fingerprint` parameter (see components/fingerprint/README.md). Never cached itself."""

from kfp import dsl

from components.common.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def fingerprint(
    step: str,
    model_ref: str = "",
    labeller_model: str = "",
    medmnist_root: str = "",
    pmc_vqa_root: str = "",
) -> str:
    """Fingerprint (hex sha256) of the content behind the references given (empty ones are skipped)."""
    import os
    import tempfile

    from components.fingerprint.__main__ import main

    refs = {"model_ref": model_ref, "labeller_model": labeller_model, "medmnist_root": medmnist_root,
            "pmc_vqa_root": pmc_vqa_root}
    out = os.path.join(tempfile.mkdtemp(prefix="fingerprint-"), "fingerprint.txt")
    rc = main(["--step", step, "--refs", ",".join(f"{k}={v}" for k, v in refs.items() if v), "--out", out])
    if rc != 0:
        raise RuntimeError(f"fingerprint launcher exited with status {rc}")
    with open(out) as f:
        return f.read().strip()
