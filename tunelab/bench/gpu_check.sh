#!/usr/bin/env bash
# Run: bash tunelab/bench/gpu_check.sh [tunelab bench-gpu options]   (on one CUDA GPU; < 5 min on an H200)
# tunelab's own trainer (training.ready_for_training + trainer_for) for LoRA and QLoRA on a random
# Llama-3-8B, printed and written as JSON beside torchtune's and unsloth's published figures.
# Uses the machine's python3 (torch, transformers, peft, accelerate). What it lacks (trl, datasets,
# pydantic, bitsandbytes, ...) comes from .whl/, filled where there is network by
# tunelab/bench/gpu_wheels.sh, with the tokenizer in .whl/tokenizer/.
# Writes $OUT/gpu_check_tunelab.json when OUT is set, else metrics/bench/gpu_check_tunelab.json.
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repo root: `python3 -m tunelab.cli` imports tunelab from here

if compgen -G ".whl/*.whl" >/dev/null; then
    echo "installing $(ls .whl/*.whl | wc -l) wheels from .whl/ into /tmp/site"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# No network there: never wait on the Hub.
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

if command -v nvidia-smi >/dev/null; then
    nvidia-smi -L
fi
tokenizer=.whl/tokenizer
[ -f "$tokenizer/tokenizer_config.json" ] || tokenizer=models/base
output=${OUT:-metrics/bench}/gpu_check_tunelab.json

python3 -m tunelab.cli bench-gpu --tokenizer "$tokenizer" --output "$output" "$@"
