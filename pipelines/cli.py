"""The `medbridge` command.

    medbridge run                                   # whole DAG locally (kfp.local), demo profile, prints the report
    medbridge compile --profile cluster --out pipeline.yaml
    medbridge submit --host https://kfp.example.org --profile cluster --set model_ref=s3://models/ckpt-42
    medbridge submit ... --schedule "0 3 * * *"    # recurring re-diagnosis
    medbridge diagnose --model REF --data DIR --k 16 --out DIR
    medbridge demo-assets --out DIR
    medbridge curate|probe|sft|grpo|evaluate ...    # any step's launcher, same flags as python -m components.<step>
    medbridge audit TARGET [--json]                 # verify artifacts against their lineage (exit 1 on tampering)
    medbridge watch s3://models/ckpts --state s3://medbridge/state --host URL   # re-diagnose new checkpoints
    medbridge trend s3://medbridge/diagnoses --out trend.html                 # diagnoses across checkpoints
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

    demo = sub.add_parser("demo-assets", help="build the tiny model and the synthetic data")
    demo.add_argument("--out", required=True)
    demo.add_argument("--seed", type=int, default=0)

    # Audits and re-diagnosis: each command's flags live in its own module.
    for name, module in _AUDIT_COMMANDS.items():
        mod = importlib.import_module(module)
        mod.add_arguments(sub.add_parser(name, help=mod.HELP, description=mod.__doc__,
                                         formatter_class=argparse.RawDescriptionHelpFormatter))
    subm.add_argument("--train", action="store_true",
                      help="a person approves training this checkpoint: record the run in its registry entry (--registry)")
    subm.add_argument("--registry", default=None, metavar="STATE_URI",
                      help="the checkpoint registry (medbridge watch --state) that records a --train approval")
    return parser


_AUDIT_COMMANDS = {"audit": "pipelines.audit", "watch": "pipelines.watch", "trend": "pipelines.trend"}


def cmd_audit_commands(args) -> int:
    return importlib.import_module(_AUDIT_COMMANDS[args.command]).run(args)


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
    print(f"[medbridge] branch taken: {result.branch}; finished in {result.seconds / 60:.1f} min")
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
    if args.train:  # before submitting: the registry must know (have diagnosed) this checkpoint
        from pipelines.watch import entry_for_training

        entry_for_training(args.registry, params.model_ref, schedule=args.schedule)
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
            if args.train:
                from pipelines.watch import record_training

                print(record_training(args.registry, params.model_ref, run.run_id))
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
                   **dict.fromkeys(_AUDIT_COMMANDS, cmd_audit_commands)}[args.command or "run"]
        return handler(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"medbridge: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
