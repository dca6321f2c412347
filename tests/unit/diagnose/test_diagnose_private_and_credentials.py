"""A real diagnose run (the launcher as a subprocess, as Kubeflow runs it) on the tiny model read from the real S3
server with credentials planted in its environment: no credential appears in any file it writes or any line it
logs; the lineage record is signed, names the model by its s3:// URI and content hash; with the privacy flag the
sample dump keeps no completion text."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from components.common.lineage import verify_signature
from components.common.storage import remote_sha256, upload_dir

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(Path(__file__).parent))
from test_diagnose_launcher import _dataset  # noqa: E402


def test_planted_credentials_never_leave_a_real_step(s3, tiny_model_dir, tmp_path):
    client, bucket = s3
    upload_dir(tiny_model_dir, f"s3://{bucket}/models/tiny", progress=False)
    data = _dataset(tmp_path / "diag")
    out = tmp_path / "diagnosis"
    planted = {
        "HF_TOKEN": "hf_PlantedTokenValue0123456789",
        "MEDBRIDGE_LINEAGE_KEY": "planted-lineage-signing-key-0123456789",
        "MEDBRIDGE_WEBHOOK_URL": "https://hooks.example.org/services/PlantedWebhookToken0123",
    }
    env = {**os.environ, **planted, "PYTHONPATH": str(ROOT), "MEDBRIDGE_CACHE": str(tmp_path / "cache"),
           "MEDBRIDGE_PRIVATE": "1"}
    secrets = [*planted.values(), os.environ["AWS_SECRET_ACCESS_KEY"]]  # the S3 secret is the real, working one
    proc = subprocess.run(
        [sys.executable, "-m", "components.diagnose", "--model", f"s3://{bucket}/models/tiny", "--data", str(data),
         "--k", "2", "--max-new-tokens", "4", "--n-boot", "100", "--device", "cpu", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    texts = {"stdout": proc.stdout, "stderr": proc.stderr}
    texts.update({str(p): p.read_bytes().decode("utf-8", errors="replace") for p in out.rglob("*") if p.is_file()})
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a planted credential reached {where}"

    lineage = json.loads((out / "lineage.json").read_text())
    assert verify_signature(lineage, planted["MEDBRIDGE_LINEAGE_KEY"].encode()) == "valid"
    model = lineage["inputs"]["model"]
    assert model["ref"] == f"s3://{bucket}/models/tiny" and model["kind"] == "s3"
    assert model["sha256"] == remote_sha256(f"s3://{bucket}/models/tiny")
    assert lineage["params"]["private"] is True

    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert rows and all("completion" not in s for r in rows for s in [r["greedy"], *r["samples"]])
    assert all({"letter", "correct"} <= set(r["greedy"]) for r in rows)  # outcomes stay: metrics can be recomputed
