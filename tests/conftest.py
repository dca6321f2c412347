"""Shared fixtures: the tiny random-weight Qwen2.5-VL (built once per test session and xdist worker) and small
MedMNIST-format npz files written in the test (keys {train,val,test}_{images,labels}), and an S3 server over real
HTTP reached the way a MinIO is, through MEDBRIDGE_S3_ENDPOINT."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
def npz_writer():
    return write_medmnist_npz


_bucket_ids = itertools.count()


@pytest.fixture(scope="session")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """(client, bucket): a client on the fake server and a fresh bucket; the environment points MedBridge at it."""
    from components.common import storage

    monkeypatch.setenv("MEDBRIDGE_S3_ENDPOINT", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    client = storage.s3_client()
    bucket = f"medbridge-test-{next(_bucket_ids)}"
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
