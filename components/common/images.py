"""Container images the pipeline's steps run on (built from images/). Override at compile time with
`medbridge compile --image-registry REGISTRY --image-tag TAG` or the MEDBRIDGE_IMAGE_* variables."""

from __future__ import annotations

import os

REGISTRY = os.environ.get("MEDBRIDGE_IMAGE_REGISTRY", "ghcr.io/medbridge")
TAG = os.environ.get("MEDBRIDGE_IMAGE_TAG", "0.1.0")

# Light CPU profile: curation, validation, diagnosis bookkeeping, reports.
CPU_IMAGE = f"{REGISTRY}/medbridge-cpu:{TAG}"
# CUDA training profile: torch + transformers + trl + peft + deepspeed (probe, sft, grpo, GPU diagnosis).
TRAIN_IMAGE = f"{REGISTRY}/medbridge-train:{TAG}"
# Serving profile: the train profile plus vLLM for high-throughput sampling (diagnose, evaluate, labelling).
SERVE_IMAGE = f"{REGISTRY}/medbridge-serve:{TAG}"
