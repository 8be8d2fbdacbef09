"""`tunelab validate-data`, `tunelab analyze-data` and `tunelab validate-config`: check
and measure inputs before a run."""

from __future__ import annotations

import sys
from pathlib import Path

from tunelab.cli.arg_types import DEFAULT_BASE, positive_int
from tunelab.config import params
from tunelab.errors import DataError


def register(commands) -> None:
    check = commands.add_parser("validate-data", help="check data files (format, fields, tokens)")
    check.add_argument("files", nargs="+", type=Path)
    check.add_argument("--format", default="auto", choices=params.CHOICES["prepare.format"])
    check.add_argument("--base", default=DEFAULT_BASE,
                       help="model folder whose tokenizer to check against (default: models/base)")
    check.add_argument("--max-length", type=positive_int, default=None,
                       help="token limit (default: train.max_length from params.yaml)")
    check.set_defaults(handler=validate_data)

    analyze = commands.add_parser(
        "analyze-data", help="token-length histogram, truncation, loss share, duplicates, counts")
    analyze.add_argument("files", nargs="+", type=Path)
    analyze.add_argument("--show-examples", type=positive_int, default=None, metavar="N",
                         help="also print N examples with their loss tokens in [[ ]]")
    analyze.add_argument("--format", default="auto", choices=params.CHOICES["prepare.format"])
    analyze.add_argument("--base", default=DEFAULT_BASE,
                         help="model folder whose tokenizer to count with (default: models/base)")
    analyze.add_argument("--max-length", type=positive_int, default=None,
                         help="token limit (default: train.max_length from params.yaml)")
    analyze.add_argument("--train-on", default=None, choices=params.CHOICES["train.train_on"],
                         help="which turns carry loss (default: train.train_on from params.yaml)")
    analyze.set_defaults(handler=analyze_data)

    config = commands.add_parser("validate-config", help="check params.yaml")
    config.add_argument("path", nargs="?", default=params.PARAMS_FILE)
    config.set_defaults(handler=validate_config)


def validate_data(args) -> int:
    from tunelab.data import columns, prepare, validation

    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        print(f"tunelab validate-data: error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    max_length = args.max_length or _param_or_default("train", "max_length")
    text_split = _param_or_default("prepare", "text_split")
    # params.yaml's column and role maps apply here as in the prepare stage.
    mapping_for = columns.from_params(_section_or_default("prepare"),
                                      _param_or_default("prepare", "raw_dir"))
    if Path(args.base, "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.base)
        result = validation.validate_files(
            args.files, tokenizer, max_length, args.format,
            max_truncated_ratio=_param_or_default("validate", "max_truncated_ratio"),
            train_on=_param_or_default("train", "train_on"), text_split=text_split,
            text_stride=_param_or_default("train", "text_stride"), mapping_for=mapping_for)
    else:
        print(f"note: {args.base} not found; token checks skipped (run `dvc repro base`)",
              file=sys.stderr)
        loaded = prepare.load_files(args.files, args.format, text_split=text_split,
                                    mapping_for=mapping_for)
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


def analyze_data(args) -> int:
    """The figures the prepare stage writes to metrics/data.json ("analysis"), for any files."""
    from tunelab.data import analysis, columns, prepare

    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        print(f"tunelab analyze-data: error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    # Loaded as the prepare stage loads them (maps, system prompt): lengths as trained.
    text_split = _param_or_default("prepare", "text_split")
    mapping_for = columns.from_params(_section_or_default("prepare"),
                                      _param_or_default("prepare", "raw_dir"))
    loaded = prepare.load_files(args.files, args.format,
                                _param_or_default("prepare", "system_prompt"), text_split,
                                mapping_for)
    for error in loaded.errors:
        print(error, file=sys.stderr)
    if loaded.errors:
        print(f"{len(loaded.errors)} errors in {len(args.files)} files", file=sys.stderr)
        return 1
    if not Path(args.base, "tokenizer_config.json").is_file():
        raise DataError(f"{args.base}: no tokenizer there to count tokens with; run "
                        "`dvc repro base` or pass --base MODEL_DIR")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.base)
    max_length = args.max_length or _param_or_default("train", "max_length")
    train_on = args.train_on or _param_or_default("train", "train_on")
    # A --max-length below params.yaml's may be below train.text_stride too.
    text_stride = min(_param_or_default("train", "text_stride"), max_length)
    format_counts = analysis.count_formats(args.files, args.format, text_split, mapping_for)
    figures = analysis.analyze(loaded.examples, tokenizer, max_length=max_length,
                               train_on=train_on, text_stride=text_stride,
                               format_counts=format_counts).figures
    print(f"{len(loaded.examples)} examples in {len(args.files)} files "
          f"(max_length={max_length}, train_on={train_on})\n")
    print(analysis.render_text(figures))
    for index in analysis.shown_examples(args.show_examples or 0, len(loaded.examples)):
        print("\n" + analysis.render_example(tokenizer, loaded.examples[index], max_length,
                                             train_on, text_stride))
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
    return getattr(_section_or_default(section), key)


def _section_or_default(section: str):
    try:
        return params.load(section)
    except params.ParamsError:
        return params.SECTIONS[section]()
