"""The `tunelab` command: what is not a pipeline stage.

    tunelab validate-data FILE...            check data files before training
    tunelab validate-config [params.yaml]    check every params section
    tunelab generate --model DIR --prompt TEXT [--compare-base]
    tunelab bench [--steps 5] [--methods lora,qlora,full,baseline]   training speed
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tunelab import params
from tunelab.stage import USER_ERRORS

DEFAULT_BASE = "models/base"
DEFAULT_TRAIN_DATA = "data/prepared/train.jsonl"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tunelab", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("validate-data", help="check data files (format, fields, tokens)")
    check.add_argument("files", nargs="+", type=Path)
    check.add_argument("--format", default="auto", choices=params.CHOICES["prepare.format"])
    check.add_argument("--base", default=DEFAULT_BASE,
                       help="model folder whose tokenizer to check against (default: models/base)")
    check.add_argument("--max-length", type=_positive_int, default=None,
                       help="token limit (default: train.max_length from params.yaml)")
    check.set_defaults(handler=validate_data)

    config = commands.add_parser("validate-config", help="check params.yaml")
    config.add_argument("path", nargs="?", default=params.PARAMS_FILE)
    config.set_defaults(handler=validate_config)

    gen = commands.add_parser("generate", help="answer a prompt with a tuned (and the base) model")
    gen.add_argument("--model", required=True, type=Path,
                     help="an adapter folder (e.g. models/adapter) or a full model folder")
    gen.add_argument("--base", default=None, help="base model folder for an adapter "
                     "(default: the adapter's own base_model_name_or_path)")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--system", default=None, help="optional system message")
    gen.add_argument("--compare-base", action="store_true", help="also answer with the base model")
    gen.add_argument("--max-new-tokens", type=int, default=128)
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=0)
    gen.set_defaults(handler=generate)

    timing = commands.add_parser("bench", help="training speed of lora, qlora, full and a "
                                 "plain-Trainer baseline; writes metrics/bench.json")
    timing.add_argument("--steps", type=_positive_int, default=5, help="timed steps per contender")
    timing.add_argument("--warmup", type=_positive_int, default=2,
                        help="untimed steps first (allocator, thread pools)")
    timing.add_argument("--methods", default="lora,qlora,full,baseline",
                        help="comma-separated: lora, qlora, full, baseline")
    timing.add_argument("--batch-size", type=_positive_int, default=8)
    timing.add_argument("--max-length", type=_positive_int, default=256)
    timing.add_argument("--base", default=DEFAULT_BASE, type=Path)
    timing.add_argument("--data", default=DEFAULT_TRAIN_DATA, type=Path)
    timing.add_argument("--output", default="metrics/bench.json", type=Path)
    timing.set_defaults(handler=benchmark)

    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except USER_ERRORS as err:
        print(f"tunelab {args.command}: error: {err}", file=sys.stderr)
        return 1


def validate_data(args) -> int:
    from tunelab import data, validation

    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        print(f"tunelab validate-data: error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    max_length = args.max_length or _param_or_default("train", "max_length")
    if Path(args.base, "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.base)
        result = validation.validate_files(
            args.files, tokenizer, max_length, args.format,
            max_truncated_ratio=_param_or_default("validate", "max_truncated_ratio"))
    else:
        print(f"note: {args.base} not found; token checks skipped (run `dvc repro base`)",
              file=sys.stderr)
        loaded = data.load_files(args.files, args.format)
        result = validation.ValidationResult(checked=len(loaded.examples), errors=loaded.errors)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for error in result.errors:
        print(error, file=sys.stderr)
    if result.errors:
        print(f"{len(result.errors)} errors in {len(args.files)} files", file=sys.stderr)
        return 1
    print(f"OK: {result.checked} examples in {len(args.files)} files "
          f"({result.truncated} longer than max_length={max_length})")
    return 0


def validate_config(args) -> int:
    sections = params.load_all(args.path)
    params.check_split(sections["prepare"], args.path)
    print(f"OK: {args.path} ({', '.join(sections)})")
    return 0


def generate(args) -> int:
    from tunelab import inference

    answers = inference.answer(args.model, args.prompt, base=args.base, system=args.system,
                               compare_base=args.compare_base,
                               max_new_tokens=args.max_new_tokens,
                               temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    if len(answers) == 1:
        print(answers["tuned"])
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=args.prompt[:80], show_lines=True)
    table.add_column("base")
    table.add_column(f"tuned ({args.model})")
    table.add_row(answers["base"], answers["tuned"])
    Console().print(table)
    return 0


def benchmark(args) -> int:
    from tunelab import bench

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in bench.CONTENDERS]
    if unknown or not methods:
        print(f"tunelab bench: error: --methods: {', '.join(unknown) or 'none given'}: "
              f"choose from {', '.join(bench.CONTENDERS)}", file=sys.stderr)
        return 2
    missing = [str(p) for p in (args.base / "config.json", args.data) if not p.is_file()]
    if missing:
        print(f"tunelab bench: error: {', '.join(missing)} not found: "
              "run `dvc repro prepare` first", file=sys.stderr)
        return 2
    from rich.console import Console

    result = bench.run_bench(args.base, args.data, args.output, methods=methods,
                             steps=args.steps, warmup=args.warmup, batch_size=args.batch_size,
                             max_length=args.max_length,
                             on_progress=lambda line: print(line, file=sys.stderr))
    Console().print(bench.table(result))
    print(f"wrote {args.output}")
    failed = [name for name, row in result["contenders"].items() if "error" in row]
    return 1 if failed else 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _param_or_default(section: str, key: str):
    try:
        return getattr(params.load(section), key)
    except params.ParamsError:
        return getattr(params.SECTIONS[section](), key)


if __name__ == "__main__":
    sys.exit(main())
