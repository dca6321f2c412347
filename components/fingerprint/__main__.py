"""Fingerprint launcher: one content fingerprint of a task's remote inputs, for Kubeflow's cache key.

    python -m components.fingerprint --step curate \
        --refs medmnist_root=s3://medbridge-data/medmnist,pmc_vqa_root=s3://medbridge-data/pmc-vqa,labeller_model=Qwen/Qwen2.5-VL-32B-Instruct

Prints the fingerprint (hex sha256) and writes it to --out when given. Flags are the fields of
components.fingerprint.config.FingerprintConfig and FingerprintIO. S3 prefixes are listed (key, size, ETag), never
downloaded; see components/fingerprint/run.py for what each kind of reference contributes.
"""

from __future__ import annotations

from components.common.cli import StepParser, launch
from components.fingerprint.config import FingerprintConfig, FingerprintIO, parse_refs

PROG = "python -m components.fingerprint"


def make_parser() -> StepParser:
    return StepParser(PROG, __doc__, FingerprintConfig, FingerprintIO)


def run(cfg: FingerprintConfig, io: FingerprintIO) -> str:
    from components.common.io import atomic_write_text
    from components.fingerprint.run import fingerprint

    fp = fingerprint(cfg, parse_refs(io.refs))
    if io.out:
        atomic_write_text(io.out, fp + "\n")
    print(fp, flush=True)
    return fp


def main(argv: list[str] | None = None) -> int:
    return launch(make_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
