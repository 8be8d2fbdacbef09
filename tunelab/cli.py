"""The `tunelab` command: what is not a pipeline stage.

    tunelab validate-data FILE...            check data files before training
    tunelab validate-config [params.yaml]    check every params section
    tunelab generate --model DIR --prompt TEXT [--compare-base]
    tunelab bench [--steps 5] [--methods lora,lora_packed,qlora,full,baseline]   training speed
    tunelab merge --adapters A,B --weights 0.5,0.5 --method linear --output DIR
    tunelab export --adapter DIR --output DIR   adapter folded into a plain model, logits checked
    tunelab ensemble --models A,B --aggregation logit_mean|weighted_vote --prompt TEXT
    tunelab serve --base DIR --adapter NAME=DIR [--host 127.0.0.1 --port 8000]   OpenAI-compatible API
    tunelab watch --incoming DIR [--once --min-gain X --metric tuned.task_accuracy]   continuous learning
    tunelab sweep FILE | lr-test | sweep-report [--apply-best] | check --baseline REV   sweeps, gate
    tunelab verify-repro [--tolerance 0]   rerun train + evaluate, compare metrics with the workspace
    tunelab compare-runs A B [--margin 0.05]   per-example gap of two runs, with a 95% interval
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
    gen.add_argument("--max-new-tokens", type=_positive_int, default=128)
    gen.add_argument("--temperature", type=_non_negative_float, default=0.0, help="0 = greedy")
    gen.add_argument("--top-p", type=_unit_float, default=1.0, help="nucleus sampling, (0, 1]")
    gen.add_argument("--seed", type=int, default=0)
    gen.set_defaults(handler=generate)

    timing = commands.add_parser("bench", help="training speed of lora, qlora, full and a "
                                 "plain-Trainer baseline; writes metrics/bench.json")
    timing.add_argument("--steps", type=_positive_int, default=5, help="timed steps per contender")
    timing.add_argument("--warmup", type=_positive_int, default=2,
                        help="untimed steps first (allocator, thread pools)")
    timing.add_argument("--methods", default="lora,lora_packed,qlora,full,baseline",
                        help="comma-separated: lora, qlora, full, baseline")
    timing.add_argument("--batch-size", type=_positive_int, default=8)
    timing.add_argument("--max-length", type=_positive_int, default=256)
    timing.add_argument("--base", default=DEFAULT_BASE, type=Path)
    timing.add_argument("--data", default=DEFAULT_TRAIN_DATA, type=Path)
    timing.add_argument("--output", default="metrics/bench.json", type=Path)
    timing.set_defaults(handler=benchmark)

    from tunelab import ensemble, export, merging  # `tunelab merge/export/ensemble`
    for module in (merging, export, ensemble):
        module.register(commands)
    from tunelab import server  # `tunelab serve`
    server.register(commands)
    from tunelab import watch  # `tunelab watch`
    watch.register(commands)
    from tunelab import gate, sweep_report, sweep_run  # `tunelab sweep/lr-test/sweep-report/check`
    for module in (sweep_run, sweep_report, gate):
        module.register(commands)
    from tunelab import comparison, verify  # `tunelab verify-repro`, `tunelab compare-runs`
    for module in (verify, comparison):
        module.register(commands)

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
    also_known = ()
    if "multitask" in params.read_file(args.path):  # multitask/params.yaml
        from tunelab import multitask

        multitask.load_params(args.path)
        also_known = ("multitask",)
    sections = params.load_all(args.path, also_known)
    params.check_split(sections["prepare"], args.path)
    # Named layers must exist in the base model, when it is there to look at (weights unread).
    base = Path(args.path).parent / DEFAULT_BASE
    if not isinstance(sections["train"].lora.target_modules, str) and (base / "config.json").is_file():
        from tunelab import training

        training.check_target_modules_of(base, sections["train"].lora.target_modules)
    print(f"OK: {args.path} ({', '.join([*sections, *also_known])})")
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


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _unit_float(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


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
