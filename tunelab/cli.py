"""The `tunelab` command: what is not a pipeline stage.

    tunelab validate-data FILE...            check data files before training
    tunelab validate-config [params.yaml]    check every params section
    tunelab generate --model DIR --prompt TEXT [--compare-base]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tunelab import params
from tunelab.stage import USER_ERRORS

DEFAULT_BASE = "models/base"


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
