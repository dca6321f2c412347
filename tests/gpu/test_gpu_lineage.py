"""On a CUDA machine a step's lineage record names the GPU type, the GPUs it held and its GPU-hours."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gpu


def test_lineage_records_the_gpu(tmp_path, monkeypatch):
    import torch

    from components.common import lineage

    torch.zeros(1, device="cuda")  # the step used the GPU (lineage asks torch only when a step loaded it)
    monkeypatch.setattr(lineage, "_step_started", lineage.time.time() - 3600)  # a one-hour step
    (tmp_path / "f").write_text("x")
    env = lineage.write_lineage(tmp_path, step="s", artifact="a")["environment"]
    n = torch.cuda.device_count()
    assert env["gpu"] == {"type": torch.cuda.get_device_name(0), "count": n}
    assert env["gpu_hours"] == pytest.approx(n, rel=0.01)
    print(f"[gpu-lineage] {env['gpu']} gpu_hours={env['gpu_hours']} packages={env['packages']}")
