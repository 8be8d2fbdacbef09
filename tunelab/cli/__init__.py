"""The `tunelab` command: what is not a pipeline stage.

    tunelab validate-data FILE...            check data files before training
    tunelab analyze-data FILE... [--show-examples N]   token-length histogram, duplicates, loss share
    tunelab validate-config [params.yaml]    check every params section
    tunelab import-config FILE [--out params.yaml]   an axolotl, LLaMA-Factory or guide config
                                             into params.yaml (comments kept), old -> new
    tunelab import-config --sweep hp_search.yaml [--out FILE]   the guide's search: a sweep file
    tunelab generate --model DIR --prompt TEXT [--compare-base]
    tunelab bench [--contenders a,b] [--repeats 3] [--steps 2]   training speed, each gain isolated
    tunelab bench-generate [--batch-sizes 8,24]   the evaluate stage's generation, before/after
    tunelab bench-gpu [--tiny]   tunelab's trainer on a random Llama-3-8B (one CUDA GPU)
    tunelab bench-serve --url URL | --base DIR | --gguf NAME=FILE --output FILE   `serve` under load
    tunelab bench-json --gguf NAME=FILE   valid JSON / task accuracy with and without response_format
    tunelab merge --adapters A,B --weights 0.5,0.5 --method linear --output DIR
    tunelab export --adapter DIR --output DIR   adapter folded into a plain model, logits checked
    tunelab ensemble --models A,B --aggregation logit_mean|weighted_vote --prompt TEXT
    tunelab serve --base DIR --adapter NAME=DIR [--host 127.0.0.1 --port 8000]   OpenAI-compatible API
    tunelab serve --gguf NAME=FILE [--gguf NAME=FILE ...]   the same API for GGUF files (llama.cpp)
    tunelab serve --artifact NAME@STAGE|NAME@vX.Y.Z   a registered version, fetched through DVC
    tunelab watch --incoming DIR [--once --min-gain X --stage staging]   continuous learning, registry
    tunelab sweep FILE | lr-test | sweep-report [--apply-best] | check --baseline REV   sweeps, gate
    tunelab verify-repro [--tolerance 0]   rerun train + evaluate, compare metrics with the workspace
    tunelab compare-runs A B [--margin 0.05]   per-example gap of two runs, with a 95% interval
    tunelab ui [--host 127.0.0.1 --port 8765]   the lab in a browser: runs, compare, launch,
                                             playground, registry, data

This package is the only place that parses arguments. One module per command group
(data, import_config, generate, bench, adapters, serve, watch, experiments, ui) has
``register(commands)``, which adds its subparsers, and one handler per command, which turns
the parsed flags into plain values and calls the library; argument types live in
``arg_types``, the parser and the error handling in ``app``. cli may import every other
tunelab package; nothing imports cli. Heavy libraries (torch, transformers) are imported
inside the handlers, so ``tunelab --help`` stays fast.
"""


def main(argv: list[str] | None = None) -> int:
    """`tunelab ARGS` (the console script); ``argv`` defaults to sys.argv[1:]."""
    # Imported here, not at the top, so `python -m tunelab.cli.app` runs app only once.
    from tunelab.cli import app

    return app.main(argv)
