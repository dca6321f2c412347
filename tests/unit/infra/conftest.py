"""Fixtures for the infrastructure tests: an S3 server over real HTTP (moto's ThreadedMotoServer), reached the way a
MinIO is, through MEDBRIDGE_S3_ENDPOINT."""

from __future__ import annotations

import itertools

import pytest

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
