"""`tunelab bench`: training speed of every method; writes metrics/bench.json.
`tunelab bench-serve`: `tunelab serve` under concurrent clients (tunelab.bench.server_load).
`tunelab bench-json`: JSON answers with and without response_format (.constrained_json)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tunelab.cli.arg_types import DEFAULT_BASE, adapter_spec, gguf_spec, positive_int
from tunelab.cli.extras import require_extra

DEFAULT_TRAIN_DATA = "data/prepared/train.jsonl"
DEFAULT_TEST_DATA = "data/prepared/test.jsonl"


def register(commands) -> None:
    timing = commands.add_parser("bench", help="training speed of lora, qlora, full and a "
                                 "plain-Trainer baseline; writes metrics/bench.json")
    timing.add_argument("--steps", type=positive_int, default=5, help="timed steps per contender")
    timing.add_argument("--warmup", type=positive_int, default=2,
                        help="untimed steps first (allocator, thread pools)")
    timing.add_argument("--methods", default="lora,lora_packed,qlora,full,baseline",
                        help="comma-separated: lora, qlora, full, baseline")
    timing.add_argument("--batch-size", type=positive_int, default=8)
    timing.add_argument("--max-length", type=positive_int, default=256)
    timing.add_argument("--base", default=DEFAULT_BASE, type=Path)
    timing.add_argument("--data", default=DEFAULT_TRAIN_DATA, type=Path)
    timing.add_argument("--output", default="metrics/bench.json", type=Path)
    timing.set_defaults(handler=benchmark)

    load = commands.add_parser("bench-serve", help="load test of `tunelab serve`: concurrent "
                               "clients, every response checked; exit 1 on any 5xx, malformed "
                               "or unexpected response",
                               description="Load test for `tunelab serve`: N concurrent "
                               "clients x M requests each.")
    load.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    load.add_argument("--base", type=Path, help="start an own server on this base model")
    load.add_argument("--adapter", action="append", default=[], type=adapter_spec_text,
                      metavar="NAME=DIR")
    load.add_argument("--gguf", action="append", default=[], type=gguf_spec_text,
                      metavar="NAME=FILE", help="start an own server on GGUF files (llama.cpp), "
                      "as `tunelab serve --gguf` (repeat)")
    load.add_argument("--context", type=positive_int, default=None,
                      help="with --gguf: llama.cpp KV-cache tokens per model")
    load.add_argument("--api-key", default="load-test-key",
                      help="the running server's key; an own server uses this one")
    load.add_argument("--clients", type=positive_int, default=8)
    load.add_argument("--requests", type=positive_int, default=50, help="per client")
    load.add_argument("--max-tokens", type=positive_int, default=8)
    load.add_argument("--output", type=Path, required=True)
    load.set_defaults(handler=load_test_server)

    constrained = commands.add_parser(
        "bench-json", help="valid JSON and task accuracy of a GGUF model's answers with no "
        "response_format, json_object and json_schema; writes metrics/bench/constrained_json.json",
        description="Serve one GGUF file as `tunelab serve --gguf` does and send every chat "
        "example of the test split three ways (no response_format, json_object, json_schema "
        "built from the references), greedy; score and time each way.")
    constrained.add_argument("--gguf", action="append", default=[], type=gguf_spec_text,
                             required=True, metavar="NAME=FILE", help="the GGUF model (once)")
    constrained.add_argument("--test", type=Path, default=Path(DEFAULT_TEST_DATA),
                             metavar="FILE", help="prepared test split (JSONL)")
    constrained.add_argument("--max-examples", type=int, default=0, metavar="N",
                             help="the first N chat examples; 0 = all")
    constrained.add_argument("--max-tokens", type=positive_int, default=64, metavar="N",
                             help="per answer; the evaluation's evaluate.max_new_tokens")
    constrained.add_argument("--context", type=positive_int, default=None, metavar="N",
                             help="llama.cpp KV-cache tokens (default: `tunelab serve`'s)")
    constrained.add_argument("--output", type=Path, metavar="FILE",
                             default=Path("metrics/bench/constrained_json.json"))
    constrained.set_defaults(handler=constrained_json_bench)


def adapter_spec_text(text: str) -> str:
    """``NAME=DIR``, checked as `tunelab serve --adapter` checks it but kept as text: the
    result file records the specs as given."""
    adapter_spec(text)
    return text


def gguf_spec_text(text: str) -> str:
    """``NAME=FILE``, checked as `tunelab serve --gguf` checks it, kept as text."""
    gguf_spec(text)
    return text


def benchmark(args) -> int:
    from tunelab.bench import training_speed  # torch: only when the bench runs

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in training_speed.CONTENDERS]
    if unknown or not methods:
        print(f"tunelab bench: error: --methods: {', '.join(unknown) or 'none given'}: "
              f"choose from {', '.join(training_speed.CONTENDERS)}", file=sys.stderr)
        return 2
    missing = [str(p) for p in (args.base / "config.json", args.data) if not p.is_file()]
    if missing:
        print(f"tunelab bench: error: {', '.join(missing)} not found: "
              "run `dvc repro prepare` first", file=sys.stderr)
        return 2
    from rich.console import Console

    result = training_speed.run_bench(args.base, args.data, args.output, methods=methods,
                                      steps=args.steps, warmup=args.warmup,
                                      batch_size=args.batch_size, max_length=args.max_length,
                                      on_progress=lambda line: print(line, file=sys.stderr))
    Console().print(training_speed.table(result))
    print(f"wrote {args.output}")
    failed = [name for name, row in result["contenders"].items() if "error" in row]
    return 1 if failed else 0


def load_test_server(args) -> int:
    if [bool(args.url), bool(args.base), bool(args.gguf)].count(True) != 1:
        print("tunelab bench-serve: error: give exactly one of --url, --base and --gguf",
              file=sys.stderr)
        return 2
    if args.url and (args.adapter or args.context):
        print("tunelab bench-serve: error: --adapter and --context configure an own server "
              "(--base, --gguf), not one at --url", file=sys.stderr)
        return 2
    require_extra("bench")
    if not args.url:
        require_extra("serve")
    from tunelab.bench import server_load

    result = server_load.load_test(args.output, args.api_key, url=args.url, base=args.base,
                                   adapter_specs=args.adapter, clients=args.clients,
                                   requests=args.requests, max_tokens=args.max_tokens,
                                   gguf_specs=args.gguf, context=args.context)
    print(json.dumps({k: v for k, v in result.items() if k != "failures"}, indent=2))
    print(f"wrote {args.output}")
    return 1 if server_load.failed_responses(result) else 0


def constrained_json_bench(args) -> int:
    if len(args.gguf) != 1 or args.max_examples < 0:
        problem = f"--gguf: give exactly one NAME=FILE, got {len(args.gguf)}" \
            if len(args.gguf) != 1 else f"--max-examples: must be >= 0, got {args.max_examples}"
        print(f"tunelab bench-json: error: {problem}", file=sys.stderr)
        return 2
    for extra in ("bench", "serve", "gguf"):
        require_extra(extra)
    from tunelab.bench import constrained_json

    result = constrained_json.run(args.gguf[0], args.output, test_file=args.test,
                                  max_examples=args.max_examples, max_tokens=args.max_tokens,
                                  context=args.context)
    from rich.console import Console

    Console().print(constrained_json.table(result))
    print(f"wrote {args.output}")
    return 0
