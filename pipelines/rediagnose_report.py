"""The report of a diagnose-only run, and its publication for `medbridge trend`.

    python -m pipelines.rediagnose_report --model-ref s3://models/ckpt-42 --diagnosis DIR --probe-report DIR \\
        --curation-report DIR --out report.html [--publish-uri s3://medbridge/state/diagnoses/<sha256>]

Renders the run report (components/evaluate/report.py, the same templates as a full run: decision, diagnosis,
curves, probe, curation, audit; no trained model, so no benchmark or transfer tables). With --publish-uri, uploads
the diagnosis directory (with its lineage.json) to <uri>/diagnosis/ and the report to <uri>/report.html.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROG = "python -m pipelines.rediagnose_report"


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-ref", required=True, help="the checkpoint diagnosed")
    p.add_argument("--diagnosis", required=True, help="the diagnose step's output directory")
    p.add_argument("--probe-report", default="", help="the probe step's output directory")
    p.add_argument("--curation-report", default="", help="the curate step's curation_report directory")
    p.add_argument("--publish-uri", default="", help="s3:// prefix to publish the diagnosis and the report to")
    p.add_argument("--out", required=True, help="HTML report to write")
    return p


def write_report(model_ref: str, diagnosis: str, probe_report: str, curation_report: str, out: str) -> Path:
    from components.common.artifacts import read_diagnosis
    from components.common.io import atomic_write_text
    from components.evaluate.report import build_context, render_html

    read_diagnosis(diagnosis)  # a clear error for a directory that is not a diagnosis
    inputs = {k: v for k, v in (("diagnosis", diagnosis), ("probe_report", probe_report),
                                ("curation_report", curation_report)) if v}
    ctx = build_context(
        {}, diagnosis_dir=diagnosis, probe_dir=probe_report or None, curation_dir=curation_report or None,
        input_dirs=inputs, base_model_ref=model_ref,
    )
    ctx["title"] = "MedBridge re-diagnosis report"
    return atomic_write_text(out, render_html(ctx))


def publish(diagnosis: str, report: str, uri: str) -> None:
    from components.common.storage import upload_dir

    upload_dir(diagnosis, f"{uri.rstrip('/')}/diagnosis", progress=False)
    from components.common.storage import parse_s3_uri, s3_client

    bucket, prefix = parse_s3_uri(f"{uri.rstrip('/')}/report.html")
    s3_client().upload_file(report, bucket, prefix, ExtraArgs={"ContentType": "text/html"})


def main(argv: list[str] | None = None) -> int:
    from components.common.redact import redact_text

    args = make_parser().parse_args(argv)
    try:
        out = write_report(args.model_ref, args.diagnosis, args.probe_report, args.curation_report, args.out)
        if args.publish_uri:
            publish(args.diagnosis, str(out), args.publish_uri)
            print(f"[rediagnose] published the diagnosis and the report to {args.publish_uri}", flush=True)
        print(f"[rediagnose] report: {out}", flush=True)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"{PROG}: error: {redact_text(str(e))}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
