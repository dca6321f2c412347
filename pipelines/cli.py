"""The `medbridge` command.

    medbridge run                                   # whole DAG locally (kfp.local), demo profile, prints the report
    medbridge compile --profile cluster --out pipeline.yaml
    medbridge submit --host https://kfp.example.org --profile cluster --set model_ref=s3://models/ckpt-42
    medbridge submit ... --schedule "0 3 * * *"    # recurring re-diagnosis
    medbridge diagnose --model REF --data DIR --k 16 --out DIR
    medbridge demo-assets --out DIR
    medbridge study                                 # the paper's RQ3 study (second pipeline), demo profile, locally
    medbridge study --profile cluster --set bridged_model_ref=s3://models/octomed-7b --compile study.yaml
    medbridge curate|probe|sft|grpo|evaluate ...    # any step's launcher, same flags as python -m components.<step>
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

STEPS = ("curate", "probe", "diagnose", "sft", "grpo", "evaluate")


def _add_profile_args(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--profile", default=default, help=f"pipelines/profiles/<name>.yaml or a YAML path (default: {default})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="override one pipeline parameter, e.g. --set tau=0.6 (repeatable)")
    p.add_argument("--model-ref", default=None, help="checkpoint to diagnose (same as --set model_ref=...)")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medbridge", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=False)

    run = sub.add_parser("run", help="run the whole pipeline locally through kfp.local")
    _add_profile_args(run, "demo")
    run.add_argument("--out", default="runs", help="directory for demo assets and run outputs (default: runs)")
    run.add_argument("--no-demo-assets", action="store_true",
                     help="do not build the tiny model and synthetic data; use the profile's model and data")

    comp = sub.add_parser("compile", help="write the Kubeflow Pipelines v2 spec YAML")
    _add_profile_args(comp, "cluster")
    comp.add_argument("--out", default="pipeline.yaml", help="output YAML path")
    comp.add_argument("--no-gpu", action="store_true", help="compile without GPU requests, secrets and cache volume")
    comp.add_argument("--train-gpus", type=int, default=4, help="GPUs for the sft and grpo tasks")

    subm = sub.add_parser("submit", help="compile and submit to a Kubeflow Pipelines endpoint")
    _add_profile_args(subm, "cluster")
    subm.add_argument("--host", required=True, help="KFP API endpoint, e.g. https://kfp.example.org/pipeline")
    subm.add_argument("--experiment", default="medbridge", help="KFP experiment name")
    subm.add_argument("--run-name", default=None, help="run name (default: medbridge-<model>-<time>)")
    subm.add_argument("--schedule", default=None, metavar="CRON",
                      help="create a recurring run with this cron expression instead of a single run")
    subm.add_argument("--train-gpus", type=int, default=4)
    subm.add_argument("--no-gpu", action="store_true", help="submit without GPU requests, secrets and cache volume")

    study = sub.add_parser("study", help="the paper's RQ3 study: GRPO per task from base and bridged, transfer report")
    _add_profile_args(study, "demo")
    study.add_argument("--out", default="runs", help="directory for demo assets and run outputs (default: runs)")
    study.add_argument("--no-demo-assets", action="store_true",
                       help="do not build the tiny model and synthetic data; use the profile's model and data")
    study.add_argument("--compile", metavar="YAML", default=None,
                       help="write the study's KFP v2 spec here instead of running it")
    study.add_argument("--no-gpu", action="store_true", help="with --compile: no GPU requests, secrets or cache volume")

    demo = sub.add_parser("demo-assets", help="build the tiny model and the synthetic data")
    demo.add_argument("--out", required=True)
    demo.add_argument("--seed", type=int, default=0)
    return parser


def _params(args):
    from pipelines.params import load_profile, parse_overrides

    overrides = parse_overrides(args.overrides)
    if args.model_ref:
        overrides["model_ref"] = args.model_ref
    return load_profile(args.profile, overrides)


def cmd_run(args) -> int:
    from pipelines.local import run_local

    params = _params(args)
    result = run_local(params, out_dir=args.out, demo=not args.no_demo_assets)
    print()
    if result.report_md.is_file():
        print(result.report_md.read_text())
    gate = f", after the bridge: {result.gate}" if result.gate else ""
    print(f"[medbridge] branch taken: {result.branch}{gate}; finished in {result.seconds / 60:.1f} min")
    print(f"[medbridge] run directory: {result.run_dir}")
    print(f"[medbridge] report: {result.report_html}")
    return 0


def cmd_compile(args) -> int:
    from pipelines.pipeline import LOCAL, ClusterSettings, compile_pipeline

    settings = LOCAL if args.no_gpu else ClusterSettings(train_gpus=args.train_gpus)
    out = compile_pipeline(args.out, _params(args), settings)
    print(f"[medbridge] wrote {out}")
    return 0


def cmd_submit(args) -> int:
    import tempfile

    import kfp

    from pipelines.pipeline import LOCAL, ClusterSettings, compile_pipeline

    params = _params(args)
    settings = LOCAL if args.no_gpu else ClusterSettings(train_gpus=args.train_gpus)
    with tempfile.TemporaryDirectory() as tmp:
        spec = compile_pipeline(str(Path(tmp) / "pipeline.yaml"), params, settings)
        client = kfp.Client(host=args.host)
        experiment = client.create_experiment(args.experiment)
        name = args.run_name or f"medbridge-{Path(params.model_ref).name}"
        if args.schedule:
            job = client.create_recurring_run(
                experiment_id=experiment.experiment_id, job_name=name, cron_expression=args.schedule,
                pipeline_package_path=spec, params=params.as_kfp_arguments(), no_catchup=True,
            )
            print(f"[medbridge] recurring run {job.recurring_run_id} ({args.schedule})")
        else:
            run = client.create_run_from_pipeline_package(
                spec, arguments=params.as_kfp_arguments(), run_name=name, experiment_name=args.experiment
            )
            print(f"[medbridge] submitted run {run.run_id}")
    return 0


def cmd_study(args) -> int:
    """`medbridge study`: compile the RQ3 study pipeline, or run it through kfp.local (--set takes the profile's
    parameters and the study's own: study_tasks, bridged_model_ref, rl_max_records)."""
    from pipelines.study import compile_study, load_study, run_study_local

    extra = {"model_ref": args.model_ref} if args.model_ref else {}
    params = load_study(args.profile, args.overrides, extra)
    if args.compile:
        from pipelines.pipeline import LOCAL, ClusterSettings

        print(f"[medbridge] wrote {compile_study(args.compile, params, LOCAL if args.no_gpu else ClusterSettings())}")
        return 0
    result = run_study_local(params, out_dir=args.out, demo=not args.no_demo_assets)
    print()
    if result.report_md.is_file():
        print(result.report_md.read_text())
    print(f"[medbridge] study finished in {result.seconds / 60:.1f} min; run directory: {result.run_dir}")
    print(f"[medbridge] study report: {result.report_html}")
    return 0


def cmd_demo_assets(args) -> int:
    from pipelines.demo import main as demo_main

    return demo_main(["--out", args.out, "--seed", str(args.seed)])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in STEPS:  # forward to the step's launcher, unchanged
        return importlib.import_module(f"components.{argv[0]}.__main__").main(argv[1:]) or 0
    args = make_parser().parse_args(argv or ["run"])
    try:
        handler = {"run": cmd_run, "compile": cmd_compile, "submit": cmd_submit, "demo-assets": cmd_demo_assets,
                   "study": cmd_study}[args.command or "run"]
        return handler(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"medbridge: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
