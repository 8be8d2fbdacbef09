"""tunelab.bench: every benchmark, in one place; nothing in the pipeline imports it.

It owns ``training_speed`` (``tunelab bench``: tunelab's own trainer for lora,
lora_packed, qlora and full against a plain-Trainer tutorial baseline, in fresh
subprocesses), ``server_load`` (concurrent clients against ``tunelab serve``),
``constrained_json`` (``tunelab bench-json``: valid JSON, task accuracy and speed of a
GGUF model's answers with no ``response_format``, json_object and json_schema) and
``gpu_check`` (+ ``gpu_check.sh``: a LoRA/QLoRA step on a random Llama-3-8B). Results
that are kept go to ``metrics/bench.json`` and ``metrics/bench/``; README.md here
holds the measured figures. ``training_speed`` may import train, models, data, config
and util; ``server_load`` may import serve and util; ``constrained_json``
serve, eval, data and util. ``gpu_check`` imports nothing
from tunelab on purpose: it is a plain PyTorch loop that never runs tunelab's code, it
must run under a GPU machine's bare system python3, and its figures must never be
quoted as tunelab's. Only cli imports this package. This file imports nothing, so
``python -m tunelab.bench.gpu_check`` stays as light as the script itself.
"""
