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

$(VENV)/.installed: pyproject.toml images/install_deps.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION) $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(BIN)/python images/install_deps.py --extras dev --editable
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
