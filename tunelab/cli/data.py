"""`tunelab validate-data` and `tunelab validate-config`: check inputs before a run."""

from __future__ import annotations

import sys
from pathlib import Path

from tunelab.cli.arg_types import DEFAULT_BASE, positive_int
from tunelab.config import params


def register(commands) -> None:
    check = commands.add_parser("validate-data", help="check data files (format, fields, tokens)")
    check.add_argument("files", nargs="+", type=Path)
    check.add_argument("--format", default="auto", choices=params.CHOICES["prepare.format"])
    check.add_argument("--base", default=DEFAULT_BASE,
                       help="model folder whose tokenizer to check against (default: models/base)")
    check.add_argument("--max-length", type=positive_int, default=None,
                       help="token limit (default: train.max_length from params.yaml)")
    check.set_defaults(handler=validate_data)

    config = commands.add_parser("validate-config", help="check params.yaml")
    config.add_argument("path", nargs="?", default=params.PARAMS_FILE)
    config.set_defaults(handler=validate_config)


def validate_data(args) -> int:
    from tunelab.data import prepare, validation

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
        loaded = prepare.load_files(args.files, args.format)
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
        from tunelab.config import multitask

        multitask.load_params(args.path)
        also_known = ("multitask",)
    sections = params.load_all(args.path, also_known)  # the cross-key checks included
    # Named layers must exist in the base model, when it is there to look at (weights unread).
    base = Path(args.path).parent / DEFAULT_BASE
    if not isinstance(sections["train"].lora.target_modules, str) and (base / "config.json").is_file():
        from tunelab.train import training

        training.check_target_modules_of(base, sections["train"].lora.target_modules)
    print(f"OK: {args.path} ({', '.join([*sections, *also_known])})")
    return 0


def _param_or_default(section: str, key: str):
    """params.yaml's value, or the schema default when params.yaml is missing or invalid."""
    try:
        return getattr(params.load(section), key)
    except params.ParamsError:
        return getattr(params.SECTIONS[section](), key)
