# explaunch — the two commands a new machine needs:  make demo   |   make test
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Re-installs only when the dependency pins change; a second `make setup` does nothing.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements/constraints.txt | sha256sum | cut -c1-12)
export MLFLOW_DISABLE_TELEMETRY := true
export HYDRA_FULL_ERROR := 0

.PHONY: help setup demo test test-fast lint typecheck clean slurm-up slurm-down mlflow-server-up mlflow-server-down bench gpu-check
.DEFAULT_GOAL := help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(STAMP)  ## create .venv and install explaunch, its pinned dependencies and system packages

$(STAMP): pyproject.toml requirements/constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "explaunch needs Python 3.11, found " + sys.version.split()[0])'
	scripts/setup-system.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements/constraints.txt -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

DEMO_DIR := multirun/demo-$(shell date +%Y-%m-%d_%H-%M-%S)

demo: setup  ## install, then run the demo sweep (2 models x 3 batch sizes) and print its report
	$(BIN)/python main.py -m model=llama,mistral batch=8,16,32 hydra.sweep.dir=$(DEMO_DIR)
	$(BIN)/explaunch report $(DEMO_DIR)

test: setup lint typecheck  ## install, then lint, type-check and run every test (slow ones included)
	scripts/test-all.sh

test-fast: setup  ## unit tests only
	$(BIN)/pytest -W error -m "not slow"

bench: setup  ## benchmark suite (B1-B8, about 13 min): table + benchmarks/results/*.json; exits 1 on a missed target
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

gpu-check: setup  ## NVIDIA GPUs only: real GPU jobs + B7, records checked (~5 min); exit 2 without a GPU
	$(BIN)/python scripts/gpu_check.py $(GPU_CHECK_ARGS)

lint: setup  ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup  ## mypy --strict
	$(BIN)/mypy

slurm-up:  ## start a real single-node SLURM cluster with its own accounting here (root; installs Debian's slurm, slurmdbd, mariadb and munge when missing)
	scripts/slurm/up.sh

mlflow-server-up: setup  ## start a shared MLflow server on PostgreSQL on loopback (.mlflow-server/; installs postgresql when missing; AUTH=1: basic auth)
	$(if $(AUTH),EXPLAUNCH_MLFLOW_AUTH=$(AUTH) )scripts/mlflow_server/up.sh

mlflow-server-down:  ## stop what mlflow-server-up started (the data stays)
	scripts/mlflow_server/down.sh

slurm-down:  ## stop exactly what slurm-up started
	scripts/slurm/down.sh

clean:  ## remove what runs produced (not .venv)
	rm -rf outputs multirun mlruns mlflow.db .pytest_cache .mypy_cache .ruff_cache
