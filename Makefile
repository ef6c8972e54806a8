# grft: `make help` lists the targets.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
# torch and torchvision come first, pinned, so pip never resolves a different (multi-GB) build.
TORCH ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# e.g. BENCH_ARGS="--device cuda --precision bf16 --batch 64 --llama-shape 1b" on a GPU
BENCH_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run test test-all bench bench-fig3

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q $(TORCH)
	$(PYTHON) -m pip install -q -e ".[app,dev]"
	touch $@

install: $(STAMP) ## create .venv and install grft with the app and test extras

run: install ## run the embedded offline default experiment (python run.py)
	$(PYTHON) run.py

test: install ## run the default test suite (no slow, no GPU tests)
	$(PYTHON) -m pytest -q -m "not slow and not gpu" $(PYTEST_ARGS)

test-all: install ## run every test, slow ones included
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)

bench: install ## GRFT vs full, GPS, LoRA, linear, floor (time, memory, state, files) + Fig. 3 -> results/bench/
	$(PYTHON) -m experiments.bench $(BENCH_ARGS)

bench-fig3: install ## only the Fig. 3 memory-over-time trace (GRFT vs GPS) -> results/bench/fig3_memory.*
	$(PYTHON) -m experiments.bench.memory_trace $(BENCH_ARGS)
