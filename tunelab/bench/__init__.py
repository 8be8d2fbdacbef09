"""tunelab.bench: every benchmark, in one place; nothing in the pipeline imports it.

It owns ``training_speed`` + ``contenders`` (``tunelab bench``: tunelab's trainer with each
speed switch alone and together, qlora, full and packing, against a plain-Trainer tutorial
baseline, each in a fresh subprocess), ``generation_speed`` (``tunelab bench-generate``: the
evaluate stage's generation, before/after), ``server_load`` (concurrent clients against
``tunelab serve``), ``constrained_json`` (``tunelab bench-json``: valid JSON, task accuracy
and speed of a GGUF model's answers with no ``response_format``, json_object and
json_schema) and ``gpu_check`` (``tunelab bench-gpu`` + ``gpu_check.sh``: tunelab's trainer,
via training.ready_for_training and trainer_for, for LoRA and QLoRA on a random
Llama-3-8B on one GPU, beside torchtune's and unsloth's published figures). Results that
are kept go to ``metrics/bench.json`` and ``metrics/bench/``; docs/benchmarks.md and
docs/gpu.md hold the measured figures. ``training_speed``, ``contenders`` and ``gpu_check`` may import train,
models, data, config, util and errors; ``generation_speed`` eval, models, data, train and
util; ``server_load`` serve and util; ``constrained_json`` serve, eval, data and util.
Only cli imports this package.
"""
