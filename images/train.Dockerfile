# syntax=docker/dockerfile:1
# MedBridge CUDA training profile (medbridge-train): vision probes, SFT and GRPO (TRL + peft + DeepSpeed),
# diagnosis with the transformers sampling backend, evaluation.
#
#   docker build -f images/train.Dockerfile -t REGISTRY/medbridge-train:TAG \
#       --build-arg CODE_VERSION="medbridge $(git describe --tags --always --dirty)" .
#
# CUDA 13 wheels need an NVIDIA driver >= 580 on the nodes. For older drivers build against CUDA 12.8:
#   --build-arg CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04 \
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
# The devel base carries nvcc: DeepSpeed compiles its fused optimizer / ZeRO kernels on first use (DS_BUILD_OPS=0
# skips compiling them at install time).
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-cudnn-devel-ubuntu24.04
FROM ${CUDA_IMAGE}

ARG TORCH_VERSION=2.14.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
# Comma-separated extras from pyproject.toml: `distributed` = DeepSpeed, `kernels` = Liger's fused kernels.
ARG EXTRAS=distributed,kernels
# Recorded in every artifact's lineage.json (components/common/lineage.py reads MEDBRIDGE_CODE_VERSION).
ARG CODE_VERSION=unknown
# 1 only for `make image-test` (images/image_test.py), which builds offline on a local base with a CPU torch: every
# pin but torch's is in force and the CUDA-torch check is skipped. Never set it for an image you deploy.
ARG OFFLINE_TEST=0
# 1 = never contact the Hugging Face hub (air-gapped sites: weights come from the cache volume or s3://).
ARG HF_HUB_OFFLINE=0

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DS_BUILD_OPS=0 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Ubuntu 24.04's Python 3.12 (pyproject.toml: >= 3.11); ninja for DeepSpeed's just-in-time kernel builds.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev ninja-build ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv && python -m pip install --upgrade pip

# 1) torch first, from the wheel index given; install_deps.py checks it is the torch images/constraints/train.txt pins.
RUN python -m pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

# 2) the dependencies from pyproject.toml: this layer is rebuilt only when pyproject.toml changes.
WORKDIR /opt/medbridge/src
COPY pyproject.toml ./
COPY images/install_deps.py images/install_deps.py
COPY images/constraints images/constraints
RUN python images/install_deps.py --deps-only --image train --extras "${EXTRAS}" \
    $( [ "$OFFLINE_TEST" = 1 ] && echo --torch-as-installed )

# 3) the project itself (non-editable, into the venv); the source stays in the image for audits.
COPY . .
RUN python images/install_deps.py --image train --extras "${EXTRAS}" \
    $( [ "$OFFLINE_TEST" = 1 ] && echo --torch-as-installed ) \
 && cd / && python -c "import importlib.metadata as m, torch, components.common.storage; m.version('deepspeed'); m.version('liger-kernel'); assert torch.version.cuda or '${OFFLINE_TEST}' == '1', 'CPU torch in the CUDA image'"

# Model / data cache: mount a PersistentVolumeClaim (k8s/base/pvc.yaml) here. Group 0 + g+rwX lets
# clusters that assign an arbitrary uid (OpenShift) write to it too.
ENV MEDBRIDGE_CODE_VERSION=${CODE_VERSION} \
    MEDBRIDGE_IMAGE=medbridge-train \
    MEDBRIDGE_CONSTRAINTS=/opt/medbridge/src/images/constraints \
    MEDBRIDGE_CACHE=/cache \
    HF_HOME=/cache/hf \
    HF_HUB_OFFLINE=${HF_HUB_OFFLINE} \
    TRITON_CACHE_DIR=/cache/triton \
    TORCH_EXTENSIONS_DIR=/cache/torch_extensions \
    HOME=/home/medbridge
# Ubuntu 24.04 images ship a user `ubuntu` with uid 1000: remove it so MedBridge's user owns that uid.
RUN (userdel --remove ubuntu 2>/dev/null || true) \
 && useradd --uid 1000 --gid 0 --create-home --home-dir /home/medbridge --shell /usr/sbin/nologin medbridge \
 && mkdir -p /cache/hf /cache/triton /cache/torch_extensions \
 && chown -R 1000:0 /cache /home/medbridge \
 && chmod -R g+rwX /cache /home/medbridge
VOLUME ["/cache"]

LABEL org.opencontainers.image.title="medbridge-train" \
      org.opencontainers.image.description="MedBridge CUDA training profile (torch, TRL, peft, DeepSpeed)" \
      org.opencontainers.image.version="${CODE_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

USER 1000
WORKDIR /home/medbridge
CMD ["medbridge", "--help"]
