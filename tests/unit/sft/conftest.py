"""Every bridge-step test keeps its checkpoints and caches in its own temporary cache volume."""

import pytest


@pytest.fixture(autouse=True)
def _own_cache_volume(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDBRIDGE_CACHE", str(tmp_path / "cache"))
