# grft: `make help` lists the targets.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
# torch and torchvision come first, pinned, so pip never resolves a different (multi-GB) build.
TORCH ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
DATA_DIR ?= data
TASKS ?=
DATA_TASKS := $(if $(TASKS),--tasks $(TASKS))

.DEFAULT_GOAL := help
.PHONY: help install run test test-all data-vtab data-fgvc data-glue data-check

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

data-vtab: install ## VTAB-1k via TFDS into $(DATA_DIR)/vtab-1k, then check (TASKS=a,b for some)
	$(VENV)/bin/pip install -q -e ".[prep-vtab]"
	$(PYTHON) -m data_prep.vtab --data-dir $(DATA_DIR) $(DATA_TASKS)

data-fgvc: install ## FGVC official archives -> VPT json splits in $(DATA_DIR)/fgvc, then check
	$(VENV)/bin/pip install -q -e ".[prep-fgvc]"
	$(PYTHON) -m data_prep.fgvc --data-dir $(DATA_DIR) $(DATA_TASKS)

data-glue: install ## GLUE CoLA/MRPC/RTE as the original TSVs in $(DATA_DIR)/glue, then check
	$(VENV)/bin/pip install -q -e ".[prep-glue]"
	$(PYTHON) -m data_prep.glue --data-dir $(DATA_DIR) $(DATA_TASKS)

data-check: install ## verify all 27 task folders under $(DATA_DIR) (changes nothing; fails if any has problems)
	status=0; for family in vtab fgvc glue; do $(PYTHON) -m data_prep.$$family --data-dir $(DATA_DIR) --check || status=1; done; exit $$status
