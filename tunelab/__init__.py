"""tunelab: a declarative, reproducible lab for fine-tuning local LLMs with DVC, TRL and PEFT.

The layout is the architecture; imports flow one way, top to bottom:

    cli/          the `tunelab` command: the only place that parses arguments
    pipeline.py   the entry point of every script in stages/ (paths from dvc.yaml)
    experiments/  the one Git/DVC/GTO layer, sweeps, the regression gate, watch, verify
    adapters/ serve/ bench/   merge/export/ensemble, the HTTP API, benchmarks
    train/ eval/ report/      fine-tuning, evaluation and scoring, plots and HTML
    models/ data/             base models and their loading; data formats to encodings
    config/       pydantic schemas of params.yaml and sweep files
    util/         atomic files, names, machine info
    errors.py     the errors a user can fix (one line each)

tests/test_architecture.py holds the map of what may import what, and fails on a circle.
"""

__version__ = "0.1.0"
