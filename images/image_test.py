"""`make image-test`: build the images with the builder that works here and run the pipeline inside them.

    python images/build.py image-test [--out runs/image-test]

What it proves, in order (each step prints its time; the whole took 9.5 minutes on 2 cores with the base made, most of it builds):
1. the CPU image builds from images/cpu.Dockerfile (on the local mmdebstrap base when no base image can be pulled;
   torch from a local PEP 503 index of the CPU wheel this machine has, so no CUDA build is fetched; `OFFLINE_TEST=1`
   keeps every pin of images/constraints/cpu.txt in force but torch's, whose CPU build the PyTorch index serves);
2. inside it, as uid 1000 (the image's user), `medbridge run` runs the whole demo DAG and writes a report that
   shows the decision;
3. one step on data mounted read-only: `python -m components.curate` reads MedMNIST / PMC-VQA from a read-only bind
   mount and writes its outputs elsewhere;
4. an artifact written by root (a cache-seeding job) is read by uid 1000 (a pipeline pod);
5. the train image builds from images/train.Dockerfile with its CUDA base swapped for the local base
   (`--build-arg CUDA_IMAGE=…`) and `OFFLINE_TEST=1` (a CPU torch in place of the CUDA build, the CUDA-torch check
   skipped): every other layer is proven to build (apt packages, the pinned stack incl. DeepSpeed, the project);
6. the serve image's dependencies resolve under images/constraints/serve.txt (`pip install --dry-run`, no
   download of vLLM's wheels).
What stays unproven here: the CUDA base images, CUDA torch and vLLM themselves (no GPU, no registry).

The machine's pip access (its CA bundle, pip configuration and the files they name, a local wheel folder) is read
from `pip config` and bind-mounted read-only into the builds at the same paths; nothing of it goes into an image.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from build import (  # images/build.py
    LOCAL_BASE,
    ROOT,
    BuildPlan,
    Mounts,
    build_command,
    detect,
    has_image,
    make_base,
    pep503_index,
)

TEST_TAG = "image-test"
UID = 1000


def pip_access() -> Mounts:
    """The CA bundle, pip configuration and wheel folder this machine's pip uses (from `pip config`), as mounts."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    values: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        values[key.split(".")[-1]] = value.strip().strip("'\"")
    debug = subprocess.run([sys.executable, "-m", "pip", "config", "debug"], capture_output=True, text=True).stdout
    configs = [line.split(",")[0].strip() for line in debug.splitlines() if line.strip().endswith("exists: True")]
    config = next((c for c in configs if c.startswith("/etc")), None)
    return Mounts(
        ca_bundle=values.get("cert") if values.get("cert") and Path(values["cert"]).exists() else None,
        pip_config=config,
        wheel_dir=values.get("find-links") if values.get("find-links") and Path(values["find-links"]).is_dir() else None,
    )


def extra_mounts(m: Mounts) -> list[str]:
    """Files the pip configuration itself names (e.g. a constraint file) must be there too."""
    paths = []
    if m.pip_config and Path(m.pip_config).is_file():
        for line in Path(m.pip_config).read_text().splitlines():
            _, _, value = line.partition("=")
            for word in value.split():
                p = word.removeprefix("file://")
                if p.startswith("/") and Path(p).exists() and p not in m.paths():
                    paths.append(p)
    return paths


def step(title: str):
    print(f"\n[image-test] {title}", flush=True)
    return time.time()


def done(t0: float, timings: dict, key: str) -> None:
    timings[key] = round(time.time() - t0, 1)
    print(f"[image-test] ok: {key} in {timings[key]} s", flush=True)


def _sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("[image-test] $ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, check=True, **kw)


def _buildah(*args: str) -> list[str]:
    return ["buildah", "--storage-driver", "vfs", *args]


def run_in(image: str, script: str, *, user: int = UID, volumes: list[str] = (), capture: bool = False) -> str:
    """Run `sh -c script` in a working container of `image` (buildah, chroot isolation), removed afterwards."""
    cid = subprocess.run(_buildah("from", "--pull-never", image), check=True, capture_output=True, text=True).stdout.strip()
    try:
        cmd = _buildah("run", "--isolation", "chroot", "--user", f"{user}:0")
        for v in volumes:
            cmd += ["-v", v]
        r = _sh([*cmd, cid, "--", "sh", "-c", script], capture_output=capture, text=True)
        return r.stdout if capture else ""
    finally:
        subprocess.run(_buildah("rm", cid), capture_output=True)


def image_size(image: str) -> str:
    out = subprocess.run(_buildah("images", "--format", "{{.Size}}", image), capture_output=True, text=True)
    return out.stdout.strip()


def run_image_test(args) -> int:
    out = Path(args.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    os.chmod(out, 0o777)  # the image's uid 1000 writes here
    timings: dict[str, float] = {}
    builder = detect()
    if builder.name != "buildah":
        print(f"[image-test] note: {builder.name} works here; the image test drives buildah for its run steps")
    if not has_image(builder, LOCAL_BASE):
        t0 = step(f"local base {LOCAL_BASE} (mmdebstrap)")
        make_base(LOCAL_BASE, builder)
        done(t0, timings, "base")

    mounts = pip_access()
    extra = extra_mounts(mounts)
    wheels = out / "torch-index" / "files"  # inside the mounted index folder: its pages link the wheels by path
    t0 = step("torch CPU wheel for a local index")
    # The CPU build of torch this machine's pip can get offline (the images pin the CUDA images' torch, whose CPU
    # build the PyTorch index serves; OFFLINE_TEST=1 keeps every other pin in force).
    torch_version = _installed_torch()
    _sh([sys.executable, "-m", "pip", "download", "--quiet", f"torch=={torch_version}", "-d", str(wheels)])  # and its deps
    index = pep503_index(wheels, out / "torch-index")
    mounts.torch_index = str(index.parent)
    done(t0, timings, "torch-index")

    def build(image: str, **build_args: str) -> str:
        tag = f"localhost/medbridge-{image}:{TEST_TAG}"
        plan = BuildPlan(image, tag, {"CODE_VERSION": "medbridge image-test", **build_args}, mounts)
        cmd = build_command(builder, plan)
        for p in extra:  # what the pip configuration names
            cmd[-1:-1] = ["-v", f"{p}:{p}:ro"]
        t0 = step(f"build {image} image")
        _sh(cmd)
        done(t0, timings, f"build-{image}")
        return tag

    cpu = build("cpu", PYTHON_IMAGE=LOCAL_BASE, TORCH_INDEX_URL=index.as_uri(), TORCH_VERSION=torch_version,
                OFFLINE_TEST="1")

    t0 = step("medbridge run inside the CPU image, as uid 1000")
    run_in(cpu, "cd /out && medbridge run --out /out/run > /out/run.log 2>&1; echo $? > /out/run.rc",
           volumes=[f"{out}:/out"])
    rc = (out / "run.rc").read_text().strip()
    if rc != "0":
        raise SystemExit(f"medbridge run failed inside the image (exit {rc}); see {out / 'run.log'}")
    reports = sorted(out.glob("run/kfp/*/evaluate*/results/report.html"))
    if not reports:
        raise SystemExit(f"no report.html under {out / 'run'}")
    html = reports[0].read_text()
    if 'id="decision"' not in html or not any(b in html for b in ("BRIDGE", "SHARPEN")):
        raise SystemExit(f"{reports[0]}: the report does not show the decision")
    owners = {p.stat().st_uid for p in (out / "run").rglob("*")}
    if owners != {UID}:
        raise SystemExit(f"files under {out / 'run'} are owned by uids {owners}, not the image's user {UID}")
    done(t0, timings, "run-in-image")

    t0 = step("python -m components.curate on data mounted read-only")
    assets = out / "run" / "demo-assets"
    script = (
        "python -m components.curate --medmnist-root /data/medmnist --pmc-vqa-root /data/pmc-vqa "
        "--labeller-model /data/model --flags pneumoniamnist,octmnist --rl-size 16 --diag-per-class 2 "
        "--eval-per-class 2 --sft-per-class 2 --label-cache /out/curate/labels.jsonl "
        + " ".join(f"--out-{n} /out/curate/{n}" for n in
                   ("medmnist-data", "diag-set", "eval-set", "sft-set", "rl-set", "rl-diag-set", "curation-report"))
        + " > /out/curate.log 2>&1; echo $? > /out/curate.rc"
    )
    run_in(cpu, script, volumes=[f"{out}:/out", f"{assets / 'medmnist'}:/data/medmnist:ro",
                                 f"{assets / 'pmc-vqa'}:/data/pmc-vqa:ro", f"{assets / 'tiny-qwen2.5-vl'}:/data/model:ro"])
    rc = (out / "curate.rc").read_text().strip()
    if rc != "0":
        raise SystemExit(f"components.curate failed on read-only data (exit {rc}); see {out / 'curate.log'}")
    done(t0, timings, "curate-read-only")

    t0 = step("an artifact written by root is read by uid 1000")
    run_in(cpu, "python -c \"from components.common.tiny_model import build_tiny_model; "
                "build_tiny_model('/out/root-written')\"", user=0, volumes=[f"{out}:/out"])
    got = run_in(cpu, "python -c \"from components.common.modeling import load_model_and_processor; "
                      "m, p = load_model_and_processor('/out/root-written'); print('read', type(m).__name__)\"",
                 volumes=[f"{out}:/out"], capture=True)
    if "read Qwen2_5_VLForConditionalGeneration" not in got:
        raise SystemExit(f"uid {UID} could not read a model written by root: {got[-500:]}")
    done(t0, timings, "root-to-uid-1000")

    build("train", CUDA_IMAGE=LOCAL_BASE, TORCH_INDEX_URL=index.as_uri(), TORCH_VERSION=torch_version,
          OFFLINE_TEST="1")

    t0 = step("serve image dependencies resolve under images/constraints/serve.txt (dry run)")
    _sh([sys.executable, str(ROOT / "images" / "install_deps.py"), "--image", "serve", "--extras", "distributed,serve,kernels",
         "--dry-run"])
    done(t0, timings, "serve-resolve")

    summary = {"timings_s": timings, "sizes": {i: image_size(f"localhost/medbridge-{i}:{TEST_TAG}") for i in ("cpu", "train")},
               "report": str(reports[0])}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\n[image-test] PASSED " + json.dumps(summary))
    return 0


def _installed_torch() -> str:
    from importlib.metadata import version

    return version("torch").split("+")[0]
