#!/usr/bin/env bash
# Run: bash tunelab/bench/gpu_check.sh [--methods lora,qlora] [--steps 5] ...   (arguments go to gpu_check.py)
# LoRA and QLoRA steps on a random Llama-3-8B-shaped model; prints tokens/s and peak memory
# next to torchtune's RTX 4090 figures. A plain PyTorch loop: it does not run tunelab's code.
# Uses the system python3 and whatever it has installed.
set -euo pipefail
cd "$(dirname "$0")/../.."  # the repo root

# Machines without network get bitsandbytes as a wheel dropped in .whl/ (git-ignored).
if ! python3 -c "import bitsandbytes" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
    echo "installing bitsandbytes from .whl/ into /tmp/site"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

if command -v nvidia-smi >/dev/null; then
    nvidia-smi -L
fi

python3 tunelab/bench/gpu_check.py "$@"
