"""`tunelab bench`: training speed, each gain isolated (tunelab.bench.training_speed);
writes metrics/bench.json.
`tunelab bench-serve`: `tunelab serve` under concurrent clients (tunelab.bench.server_load).
`tunelab bench-json`: JSON answers with and without response_format (.constrained_json).
`tunelab bench-generate`: the evaluate stage's generation, before/after (.generation_speed).
`tunelab bench-gpu`: tunelab's trainer on a random Llama-3-8B on one GPU (.gpu_check)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tunelab.bench.contenders import CONTENDERS  # torch-free: names for --help and checks
from tunelab.cli.arg_types import DEFAULT_BASE, adapter_spec, gguf_spec, parse_list, positive_int
from tunelab.cli.extras import require_extra

DEFAULT_TRAIN_DATA = "data/prepared/train.jsonl"
DEFAULT_TEST_DATA = "data/prepared/test.jsonl"
CONTENDER_NAMES = list(CONTENDERS)


def register(commands) -> None:
    timing = commands.add_parser(
        "bench", help="training speed, each of tunelab's gains isolated against a tutorial "
        "baseline; writes metrics/bench.json",
        description="Train a few steps of each contender (tunelab.bench.contenders) on the "
        "same data, seed and batch, each in its own process: warm-up steps, then timed "
        "windows; report effective (non-padding) tokens/s, its spread, peak memory and MFU.")
    timing.add_argument("--contenders", default=None, metavar="A,B,...",
                        help="comma-separated, default all: " + ", ".join(CONTENDER_NAMES))
    timing.add_argument("--steps", type=positive_int, default=2,
                        help="optimizer steps per timed window")
    timing.add_argument("--repeats", type=positive_int, default=3, help="timed windows")
    timing.add_argument("--warmup", type=positive_int, default=1,
                        help="untimed steps first (thread pools, allocator, torch.compile)")
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
    register_generation(commands)
    register_gpu_check(commands)


def register_generation(commands) -> None:
    generation = commands.add_parser(
        "bench-generate", help="the evaluate stage's generation (base and tuned) in file order "
        "and sorted by length; writes metrics/bench/generation.json",
        description="Time evaluation.generate as the evaluate stage calls it (greedy, the tuned "
        "LoRA merged) for the base and the tuned model on the test split's chat examples: "
        "'before' (file order), 'after' (longest prompts first), 'after_shared_prefix' (the "
        "common prompt prefix prefilled once), 'after_static_cache' (StaticCache).")
    generation.add_argument("--base", type=Path, default=Path(DEFAULT_BASE))
    generation.add_argument("--adapter", type=Path, default=Path("models/adapter"),
                            help="the trained adapter (or full model) folder")
    generation.add_argument("--test", type=Path, default=Path(DEFAULT_TEST_DATA), metavar="FILE",
                            help="prepared test split (JSONL)")
    generation.add_argument("--batch-sizes", default="24", metavar="N,N",
                            help="comma-separated; the stage's is evaluate.batch_size")
    generation.add_argument("--max-new-tokens", type=positive_int, default=64, metavar="N",
                            help="per answer; the stage's is evaluate.max_new_tokens")
    generation.add_argument("--max-examples", type=int, default=0, metavar="N",
                            help="the first N chat examples; 0 = all")
    generation.add_argument("--repeats", type=positive_int, default=3,
                            help="timed runs of every variant (min/median/max)")
    generation.add_argument("--variants", default="before,after,after_shared_prefix",
                            help="comma-separated: before, after, after_shared_prefix, "
                            "after_static_cache")
    generation.add_argument("--output", type=Path, metavar="FILE",
                            default=Path("metrics/bench/generation.json"))
    generation.set_defaults(handler=generation_bench)


def register_gpu_check(commands) -> None:
    gpu = commands.add_parser(
        "bench-gpu", help="tunelab's trainer (LoRA, QLoRA) on a random Llama-3-8B on one CUDA "
        "GPU, beside torchtune's and unsloth's published figures; writes "
        "metrics/bench/gpu_check_tunelab.json",
        description="Build a random Llama-3-8B-shaped model on the GPU and train it through "
        "training.ready_for_training and trainer_for with torchtune's llama3/8B_lora settings "
        "(batch 2 x 2048, every position labelled); report tokens/s and peak GPU memory.")
    gpu.add_argument("--methods", default="lora,qlora", help="comma-separated: lora, qlora")
    gpu.add_argument("--steps", type=positive_int, default=10, help="timed steps per method")
    gpu.add_argument("--warmup", type=positive_int, default=2,
                     help="untimed steps first (kernels, allocator)")
    gpu.add_argument("--tokenizer", type=Path, default=Path(DEFAULT_BASE),
                     help="a tokenizer folder; only its pad token is used")
    gpu.add_argument("--output", type=Path, default=None,
                     help="JSON report (default metrics/bench/gpu_check_tunelab.json; "
                     "with --tiny reports/gpu_check_tunelab_tiny.json)")
    gpu.add_argument("--tiny", action="store_true",
                     help="a tiny Llama (CPU without a GPU): the same code in seconds")
    gpu.add_argument("--no-checkpointing", action="store_true",
                     help="keep activations instead of recomputing them (faster, more memory)")
    gpu.set_defaults(handler=gpu_check_bench)


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
    names = CONTENDER_NAMES if args.contenders is None else \
        [name.strip() for name in args.contenders.split(",") if name.strip()]
    unknown = [name for name in names if name not in CONTENDER_NAMES]
    if unknown or not names:
        print(f"tunelab bench: error: --contenders: {', '.join(unknown) or 'none given'}: "
              f"choose from {', '.join(CONTENDER_NAMES)}", file=sys.stderr)
        return 2
    missing = [str(p) for p in (args.base / "config.json", args.data) if not p.is_file()]
    if missing:
        print(f"tunelab bench: error: {', '.join(missing)} not found: "
              "run `dvc repro prepare` first", file=sys.stderr)
        return 2
    from rich.console import Console

    from tunelab.bench import training_speed  # torch: only when the bench runs

    result = training_speed.run_bench(args.base, args.data, args.output, contenders=names,
                                      steps=args.steps, warmup=args.warmup,
                                      repeats=args.repeats, batch_size=args.batch_size,
                                      max_length=args.max_length,
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


def generation_bench(args) -> int:
    from tunelab.errors import DataError

    sizes = parse_list(args.batch_sizes, "--batch-sizes")  # DataError: one line, exit 1
    if not all(size.isdigit() and int(size) > 0 for size in sizes):
        raise DataError(f"--batch-sizes: expected positive integers, got {args.batch_sizes!r}")
    if args.max_examples < 0:
        print(f"tunelab bench-generate: error: --max-examples: must be >= 0, got "
              f"{args.max_examples}", file=sys.stderr)
        return 2
    missing = [str(p) for p in (args.base / "config.json", args.adapter) if not p.exists()]
    if missing:
        print(f"tunelab bench-generate: error: {', '.join(missing)} not found: "
              "run `dvc repro train` first", file=sys.stderr)
        return 2
    from rich.console import Console

    from tunelab.bench import generation_speed  # torch: only when the bench runs

    result = generation_speed.run_generation_bench(
        args.base, args.adapter, args.test, args.output,
        batch_sizes=tuple(int(size) for size in sizes), max_new_tokens=args.max_new_tokens,
        max_examples=args.max_examples, repeats=args.repeats,
        variants=tuple(parse_list(args.variants, "--variants")),
        on_progress=lambda line: print(line, file=sys.stderr))
    Console().print(generation_speed.table(result))
    print(f"wrote {args.output}")
    return 0


def gpu_check_bench(args) -> int:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in ("lora", "qlora")]
    if unknown or not methods:
        print(f"tunelab bench-gpu: error: --methods: {', '.join(unknown) or 'none given'}: "
              "choose from lora, qlora", file=sys.stderr)
        return 2
    from rich.console import Console

    from tunelab.bench import gpu_check  # torch: only when the check runs

    output = args.output or Path(gpu_check.TINY_OUTPUT if args.tiny else gpu_check.OUTPUT)
    report = gpu_check.run_gpu_check(methods, args.steps, args.warmup, args.tokenizer, output,
                                     tiny=args.tiny, checkpointing=not args.no_checkpointing)
    for table in gpu_check.tables(report):
        Console().print(table)
    print(f"wrote {output}")
    return 1 if any(row["error"] for row in report["results"]) else 0
