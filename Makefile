# MedBridge developer entry points. `make run` and `make test` create the environment themselves.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# Where plain PyPI would give a CUDA build on a CPU-only machine, point this at a CPU wheel index.
TORCH_INDEX_URL ?=
PYTEST_ARGS ?=

.PHONY: venv run test test-slow test-gpu compile lock k8s-check bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml images/install_deps.py images/constraints/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION) $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/python images/install_deps.py --image cpu --torch-as-installed --extras dev --editable
	touch $@

## The main job: the whole pipeline, locally through kfp.local, on the embedded demo profile.
run: venv
	$(BIN)/medbridge run

## The default test suite (CPU, well under 20 minutes on 2 cores); includes both DAG branches end to end.
test: venv
	$(BIN)/python -m pytest -n 2 -m "not gpu" $(PYTEST_ARGS)

test-gpu: venv
	$(BIN)/python -m pytest -m gpu $(PYTEST_ARGS)

compile: venv
	$(BIN)/medbridge compile --out pipeline.yaml

## Re-resolve the images' pinned library stack (images/constraints/*.txt) after editing stack.in or pyproject.toml.
lock: venv
	$(BIN)/python images/lock.py

## Render a k8s overlay and refuse placeholders: make k8s-check OVERLAY=k8s/overlays/prod
OVERLAY ?= k8s/overlays/prod
k8s-check: venv
	$(BIN)/medbridge k8s check $(OVERLAY)

clean:
	rm -rf $(VENV) runs .pytest_cache

## Container images (images/README.md). The builder is whichever works here: docker with a running daemon, podman that
## can run containers, else buildah with chroot isolation. Where no base image can be pulled, the CPU image is built on
## a local Debian base made by mmdebstrap; BASE_IMAGE names another. Machine-specific package access is mounted
## read-only into the build, never baked in: CA_BUNDLE (pip's cert), PIP_CONFIG (a pip configuration file),
## WHEEL_DIR (a local wheel folder), TORCH_WHEELS (a folder of torch wheels served as the torch index).
REGISTRY ?= registry.invalid/medbridge
TAG ?= 0.1.0
BASE_IMAGE ?=
CA_BUNDLE ?=
PIP_CONFIG ?=
WHEEL_DIR ?=
TORCH_WHEELS ?=
IMAGE ?= all
IMAGE_FLAGS = --registry $(REGISTRY) --tag $(TAG) $(if $(BASE_IMAGE),--base-image $(BASE_IMAGE)) \
	$(if $(CA_BUNDLE),--ca-bundle $(CA_BUNDLE)) $(if $(PIP_CONFIG),--pip-config $(PIP_CONFIG)) \
	$(if $(WHEEL_DIR),--wheel-dir $(WHEEL_DIR)) $(if $(TORCH_WHEELS),--torch-wheels $(TORCH_WHEELS))

images: venv
	$(BIN)/python images/build.py build --image $(IMAGE) $(IMAGE_FLAGS)

push: venv
	$(BIN)/python images/build.py push --image $(IMAGE) --registry $(REGISTRY) --tag $(TAG)

## Build the images with buildah and run the pipeline inside them (not part of `make test`; ~10 minutes on 2 cores, ~13 with the base image made first).
image-test: venv
	@command -v buildah >/dev/null && command -v mmdebstrap >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq buildah mmdebstrap; }
	$(BIN)/python images/build.py image-test
