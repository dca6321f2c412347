# syntax=docker/dockerfile:1
# MedBridge light CPU profile (medbridge-cpu): curation + great-expectations validation, report rendering,
# bookkeeping steps, the `medbridge` CLI (the re-diagnosis CronJob submits from it), tiny-model demos.
#
#   docker build -f images/cpu.Dockerfile -t REGISTRY/medbridge-cpu:TAG \
#       --build-arg CODE_VERSION="medbridge $(git describe --tags --always --dirty)" .
#
# torch comes from the CPU wheel index: from plain PyPI it would be a multi-GB CUDA build, and medmnist's
# torchvision requirement would pull one too (install_deps.py installs medmnist with --no-deps for that reason).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG TORCH_VERSION=2.14.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Comma-separated extras from pyproject.toml; none for the light profile.
ARG EXTRAS=
# Recorded in every artifact's lineage.json (components/common/lineage.py reads MEDBRIDGE_CODE_VERSION).
ARG CODE_VERSION=unknown
# 1 only for `make image-test` (images/image_test.py), which builds offline on a local base with a CPU torch: every
# pin but torch's is in force and the CUDA-torch check is skipped. Never set it for an image you deploy.
ARG OFFLINE_TEST=0
# 1 = never contact the Hugging Face hub (air-gapped sites: weights come from the cache volume or s3://).
ARG HF_HUB_OFFLINE=0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv && python -m pip install --upgrade pip

# 1) torch first, from the wheel index given; install_deps.py checks it is the torch images/constraints/cpu.txt pins.
RUN python -m pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

# 2) the dependencies from pyproject.toml: this layer is rebuilt only when pyproject.toml changes.
WORKDIR /opt/medbridge/src
COPY pyproject.toml ./
COPY images/install_deps.py images/install_deps.py
COPY images/constraints images/constraints
RUN python images/install_deps.py --deps-only --image cpu --extras "${EXTRAS}" \
    $( [ "$OFFLINE_TEST" = 1 ] && echo --torch-as-installed )

# 3) the project itself (non-editable, into the venv); the source stays in the image for audits.
COPY . .
RUN python images/install_deps.py --image cpu --extras "${EXTRAS}" \
    $( [ "$OFFLINE_TEST" = 1 ] && echo --torch-as-installed ) \
 && cd / && python -c "import torch, components.common.storage; assert torch.version.cuda is None, 'CUDA torch in the CPU image'"

# Model / data cache: mount a PersistentVolumeClaim (k8s/base/pvc.yaml) here. Group 0 + g+rwX lets
# clusters that assign an arbitrary uid (OpenShift) write to it too.
ENV MEDBRIDGE_CODE_VERSION=${CODE_VERSION} \
    MEDBRIDGE_IMAGE=medbridge-cpu \
    MEDBRIDGE_CONSTRAINTS=/opt/medbridge/src/images/constraints \
    MEDBRIDGE_CACHE=/cache \
    HF_HOME=/cache/hf \
    HF_HUB_OFFLINE=${HF_HUB_OFFLINE} \
    HOME=/home/medbridge
RUN useradd --uid 1000 --gid 0 --create-home --home-dir /home/medbridge --shell /usr/sbin/nologin medbridge \
 && mkdir -p /cache/hf \
 && chown -R 1000:0 /cache /home/medbridge \
 && chmod -R g+rwX /cache /home/medbridge
VOLUME ["/cache"]

LABEL org.opencontainers.image.title="medbridge-cpu" \
      org.opencontainers.image.description="MedBridge light CPU profile" \
      org.opencontainers.image.version="${CODE_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

USER 1000
WORKDIR /home/medbridge
CMD ["medbridge", "--help"]
