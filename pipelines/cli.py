"""The `medbridge` command.

    medbridge run                                   # whole DAG locally (kfp.local), demo profile, prints the report
    medbridge compile --profile cluster --out pipeline.yaml --image-registry registry.hospital.example/ml --image-tag 0.2.0
    medbridge submit --host https://kfp.example.org/pipeline --namespace medbridge --image-registry ... \
        --set model_ref=s3://models/ckpt-42
    medbridge submit ... --schedule "0 3 * * *"    # recurring run, daily at 03:00 (sent to KFP as "0 0 3 * * *")
    medbridge k8s check k8s/overlays/prod           # render an overlay and refuse placeholders
    medbridge --version                             # code version, the pinned library stack, the images
    medbridge diagnose --model REF --data DIR --k 16 --out DIR
    medbridge demo-assets --out DIR
    medbridge study                                 # the paper's RQ3 study (second pipeline), demo profile, locally
    medbridge study --profile cluster --set bridged_model_ref=s3://models/octomed-7b --compile study.yaml
    medbridge curate|probe|sft|grpo|evaluate ...    # any step's launcher, same flags as python -m components.<step>
    medbridge audit TARGET [--json]                 # verify artifacts against their lineage (exit 1 on tampering)
    medbridge watch s3://models/ckpts --state s3://medbridge/state --host URL   # re-diagnose new checkpoints
    medbridge trend s3://medbridge/diagnoses --out trend.html                 # diagnoses across checkpoints
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

STEPS = ("curate", "probe", "diagnose", "sft", "grpo", "evaluate", "publish", "fingerprint")
# Where a pod's projected service-account token for KFP is mounted (k8s/base/cronjob-rediagnose.yaml), as kfp reads it.
DEFAULT_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"


def _add_profile_args(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--profile", default=default, help=f"pipelines/profiles/<name>.yaml or a YAML path (default: {default})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="override one pipeline parameter, e.g. --set tau=0.6 (repeatable)")
    p.add_argument("--model-ref", default=None, help="checkpoint to diagnose (same as --set model_ref=...)")


def _add_cluster_args(p: argparse.ArgumentParser) -> None:
    """Placement and image flags shared by compile and submit."""
    p.add_argument("--no-gpu", action="store_true", help="compile without GPU requests, secrets and cache volume")
    p.add_argument("--train-gpus", type=int, default=4, help="GPUs for the sft and grpo tasks")
    p.add_argument("--train-gpu-product", default=None, metavar="PRODUCT",
                   help="nvidia.com/gpu.product the sft/grpo nodes must have ('' = any GPU node; default NVIDIA-H100-80GB-HBM3)")
    p.add_argument("--labeller-gpu-product", default=None, metavar="PRODUCT",
                   help="nvidia.com/gpu.product of the node running curate's 32B labeller ('' = any GPU node)")
    p.add_argument("--image-registry", default=None, metavar="REGISTRY",
                   help="registry path the images were pushed to, e.g. registry.hospital.example/ml (default: "
                        "$MEDBRIDGE_IMAGE_REGISTRY, else the placeholder, which submit refuses)")
    p.add_argument("--image-tag", default=None, metavar="TAG", help="image tag (default: $MEDBRIDGE_IMAGE_TAG, else 0.1.0)")
    p.add_argument("--image-digest", action="append", default=[], metavar="NAME=sha256:HEX",
                   help="pin one image by digest, e.g. medbridge-train=sha256:... (repeatable)")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medbridge", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="store_true", help="print the code version, the pinned library stack and the images")
    sub = parser.add_subparsers(dest="command", required=False)

    run = sub.add_parser("run", help="run the whole pipeline locally through kfp.local")
    _add_profile_args(run, "demo")
    run.add_argument("--out", default="runs", help="directory for demo assets and run outputs (default: runs)")
    run.add_argument("--no-demo-assets", action="store_true",
                     help="do not build the tiny model and synthetic data; use the profile's model and data")

    comp = sub.add_parser("compile", help="write the Kubeflow Pipelines v2 spec YAML")
    _add_profile_args(comp, "cluster")
    comp.add_argument("--out", default="pipeline.yaml", help="output YAML path")
    _add_cluster_args(comp)

    subm = sub.add_parser("submit", help="compile and submit to a Kubeflow Pipelines endpoint")
    _add_profile_args(subm, "cluster")
    subm.add_argument("--host", required=True, help="KFP API endpoint, e.g. https://kfp.example.org/pipeline or "
                      "http://ml-pipeline.kubeflow.svc.cluster.local:8888 inside the cluster")
    subm.add_argument("--namespace", default=os.environ.get("MEDBRIDGE_KFP_NAMESPACE") or None,
                      help="multi-user Kubeflow: the profile namespace the run goes to (required there; "
                           "default $MEDBRIDGE_KFP_NAMESPACE)")
    subm.add_argument("--service-account", default=os.environ.get("MEDBRIDGE_SERVICE_ACCOUNT") or None,
                      help="Kubernetes service account of the run's pods, e.g. medbridge-runner (k8s/base/rbac.yaml; "
                           "default $MEDBRIDGE_SERVICE_ACCOUNT, else KFP's own: pipeline-runner / default-editor)")
    subm.add_argument("--token-file", default=None, metavar="PATH",
                      help="bearer token file sent on every API call, re-read each time (default: $KF_PIPELINES_SA_TOKEN_PATH "
                           f"or {DEFAULT_TOKEN_PATH} when present; '' = send none)")
    subm.add_argument("--ssl-ca-cert", default=None, metavar="PATH", help="CA bundle that signs the KFP endpoint's certificate")
    subm.add_argument("--experiment", default="medbridge", help="KFP experiment name")
    subm.add_argument("--run-name", default=None, help="run name (default: medbridge-<model>)")
    subm.add_argument("--schedule", default=None, metavar="CRON",
                      help="create a recurring run instead of a single run: five-field cron (\"0 3 * * *\" = daily at 03:00) "
                           "or KFP's six fields, seconds first (\"0 0 3 * * *\")")
    subm.add_argument("--max-concurrency", type=int, default=1, help="recurring runs: at most this many at once")
    _add_cluster_args(subm)

    k8s = sub.add_parser("k8s", help="Kubernetes manifests: check an overlay before applying it")
    k8s_sub = k8s.add_subparsers(dest="k8s_command", required=True)
    check = k8s_sub.add_parser("check", help="render an overlay with kustomize and refuse placeholders (storage class, registry)")
    check.add_argument("overlay", help="overlay directory, e.g. k8s/overlays/prod")

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
    gate = f", after the bridge: {result.gate}" if result.gate else ""
    print(f"[medbridge] branch taken: {result.branch}{gate}; finished in {result.seconds / 60:.1f} min")
    print(f"[medbridge] run directory: {result.run_dir}")
    print(f"[medbridge] report: {result.report_html}")
    return 0


def _settings(args):
    import dataclasses

    from pipelines.pipeline import LOCAL, ClusterSettings

    if args.no_gpu:
        return LOCAL
    settings = ClusterSettings(train_gpus=args.train_gpus)
    for name in ("train_gpu_product", "labeller_gpu_product"):
        if getattr(args, name) is not None:
            settings = dataclasses.replace(settings, **{name: getattr(args, name)})
    return settings


def _image_refs(args) -> dict[str, str]:
    from components.common import images

    return images.references(args.image_registry, args.image_tag, images.parse_digests(args.image_digest))


def _write_spec(out: str, params, settings, refs: dict[str, str]) -> str:
    """Compile, then point the spec at the images `refs` names (pipelines/spec.py); returns the spec's text."""
    from components.common.io import atomic_write_text
    from pipelines.pipeline import compile_pipeline
    from pipelines.spec import retarget_images

    compile_pipeline(out, params, settings)
    text = retarget_images(Path(out).read_text(), refs)
    atomic_write_text(out, text)
    return text


def cmd_compile(args) -> int:
    from pipelines.spec import placeholder_images

    text = _write_spec(args.out, _params(args), _settings(args), _image_refs(args))
    print(f"[medbridge] wrote {args.out}")
    if placeholder_images(text):
        print("[medbridge] note: the spec names the placeholder image registry; pass --image-registry REGISTRY "
              "--image-tag TAG (the images you built from images/) before running it on a cluster")
    return 0


def token_file(args) -> str | None:
    """The bearer token file to send: --token-file, else $KF_PIPELINES_SA_TOKEN_PATH, else the projected token's
    default path, when present; None for none. A file named explicitly must exist."""
    if args.token_file is not None:
        if args.token_file == "":
            return None
        if not Path(args.token_file).is_file():
            raise FileNotFoundError(f"--token-file {args.token_file}: no such file")
        return args.token_file
    for candidate in (os.environ.get("KF_PIPELINES_SA_TOKEN_PATH"), DEFAULT_TOKEN_PATH):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def _client(args):
    """kfp.Client for --host, authenticated with the token file (re-read on every call: projected tokens rotate)."""
    import kfp
    from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

    if args.ssl_ca_cert and not Path(args.ssl_ca_cert).is_file():
        raise FileNotFoundError(f"--ssl-ca-cert {args.ssl_ca_cert}: no such file")
    token = token_file(args)
    credentials = ServiceAccountTokenVolumeCredentials(path=token) if token else None
    return kfp.Client(host=args.host, namespace=args.namespace or "kubeflow", credentials=credentials,
                      ssl_ca_cert=args.ssl_ca_cert), token


def cmd_submit(args) -> int:
    import kfp_server_api

    try:
        return _submit(args)
    except kfp_server_api.ApiException as e:
        body = (e.body or "").strip().replace("\n", " ")[:300]
        raise ValueError(f"KFP API at {args.host} answered {e.status} {e.reason}: {body}") from None


def _submit(args) -> int:
    import hashlib
    import tempfile

    from pipelines import kfp_objects
    from pipelines.params import load_profile
    from pipelines.pipeline import PIPELINE_NAME
    from pipelines.schedule import describe, kfp_cron
    from pipelines.spec import placeholder_images

    params = _params(args)
    cron = kfp_cron(args.schedule) if args.schedule else None
    refs = _image_refs(args)
    if placeholder_images("\n".join(f"  image: {r}" for r in refs.values())):
        from components.common.images import PLACEHOLDER_REGISTRY

        raise ValueError(
            f"the images name the placeholder registry {PLACEHOLDER_REGISTRY!r}, which no cluster can pull from: "
            "build and push the images (images/README.md), then pass --image-registry REGISTRY --image-tag TAG "
            "(or set MEDBRIDGE_IMAGE_REGISTRY / MEDBRIDGE_IMAGE_TAG)"
        )
    if args.train:  # before submitting: the registry must know (have diagnosed) this checkpoint
        from pipelines.watch import entry_for_training

        entry_for_training(args.registry, params.model_ref, schedule=args.schedule)
    with tempfile.TemporaryDirectory() as tmp:
        spec = str(Path(tmp) / "pipeline.yaml")
        # The spec's defaults are the profile's; this run's values (overrides, --model-ref) go as run parameters,
        # so every run of one release and profile shares one pipeline version.
        text = _write_spec(spec, load_profile(args.profile), _settings(args), refs)
        version_name = f"{PIPELINE_NAME}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
        client, token = _client(args)
        if client.get_kfp_healthz().multi_user and not args.namespace:
            raise ValueError(f"{args.host} is a multi-user Kubeflow: pass --namespace with your profile's namespace")
        experiment = kfp_objects.experiment(client, args.experiment, namespace=args.namespace)
        pipeline_id, version_id = kfp_objects.pipeline_version(
            client, spec, PIPELINE_NAME, version_name, args.namespace,
            description="MedBridge: diagnose support, bridge or sharpen, evaluate, publish")
        name = args.run_name or f"medbridge-{Path(params.model_ref).name}"
        where = f"experiment {args.experiment}" + (f", namespace {args.namespace}" if args.namespace else "")
        print(f"[medbridge] pipeline {PIPELINE_NAME} version {version_name}; images {', '.join(sorted(refs.values()))}; "
              f"auth: {'token from ' + token if token else 'none'}")
        if cron:
            job = client.create_recurring_run(
                experiment_id=experiment.experiment_id, job_name=name, cron_expression=cron,
                params=params.as_kfp_arguments(), pipeline_id=pipeline_id, version_id=version_id,
                max_concurrency=args.max_concurrency, no_catchup=True, service_account=args.service_account,
            )
            print(f"[medbridge] recurring run {job.recurring_run_id} in {where}: {describe(args.schedule)}")
        else:
            run = client.run_pipeline(
                experiment_id=experiment.experiment_id, job_name=name, params=params.as_kfp_arguments(),
                pipeline_id=pipeline_id, version_id=version_id, service_account=args.service_account,
            )
            print(f"[medbridge] submitted run {run.run_id} in {where}")
            if args.train:
                from pipelines.watch import record_training

                print(record_training(args.registry, params.model_ref, run.run_id))
    return 0


def cmd_k8s(args) -> int:
    from pipelines.k8s import check_overlay

    print(check_overlay(args.overlay))
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
        if args.version:
            from pipelines.versions import report

            print(report())
            return 0
        handler = {"run": cmd_run, "compile": cmd_compile, "submit": cmd_submit, "demo-assets": cmd_demo_assets,
                   "k8s": cmd_k8s, "study": cmd_study,
                   **dict.fromkeys(_AUDIT_COMMANDS, cmd_audit_commands)}[args.command or "run"]
        return handler(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"medbridge: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
