"""`tunelab validate-data`, `tunelab analyze-data` and `tunelab validate-config`: check
and measure inputs before a run. validate-data reads SFT files as the prepare stage does
and preference files (chosen/rejected, KTO) as the align stage does."""

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
                       help="token limit (default: train.max_length from params.yaml; "
                            "align.max_length for preference files)")
    check.add_argument("--preferences", action="store_true",
                       help="read every file as preference data (chosen/rejected pairs, KTO) as "
                            "the align stage does (default: a file whose first record has such "
                            "fields is read so; align.format applies, not --format)")
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
    from tunelab.data import columns, preferences

    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        print(f"tunelab validate-data: error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    text_split = _param_or_default("prepare", "text_split")
    # params.yaml's column and role maps apply here as in the prepare and align stages.
    prepare_section = _section_or_default("prepare")
    mapping_for = columns.from_params(prepare_section, _param_or_default("prepare", "raw_dir"))
    # The align stage maps preference files with the global maps only (no per_file globs).
    preference_map = columns.build(prepare_section.columns, prepare_section.roles)
    tokenizer = None
    if Path(args.base, "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.base)
    else:
        print(f"note: {args.base} not found; token checks skipped (run `dvc repro base`)",
              file=sys.stderr)
    # Preference files (align.data) are read as the align stage reads them, the rest as
    # the prepare stage reads SFT data: the SFT reader would refuse every preference record.
    preference_files = [f for f in args.files if args.preferences
                        or preferences.is_preference_file(f, preference_map, text_split)]
    sft_files = [f for f in args.files if f not in preference_files]
    checked = []  # (warnings, errors, the summary line when there are no errors)
    if sft_files:
        checked.append(_check_sft_files(args, sft_files, tokenizer, text_split, mapping_for))
    if preference_files:
        checked.append(_check_preference_files(args, preference_files, tokenizer,
                                               lambda _: preference_map))
    warnings = [warning for found, _, _ in checked for warning in found]
    errors = [error for _, found, _ in checked for error in found]
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for error in errors:
        print(error, file=sys.stderr)
    if errors:
        print(f"{len(errors)} errors in {len(args.files)} files", file=sys.stderr)
        return 1
    for _, _, summary in checked:
        print(summary)
    return 0


def _check_sft_files(args, paths: list[Path], tokenizer, text_split: str, mapping_for):
    """SFT data as the prepare and validate stages check it (validate.* from params.yaml)."""
    from tunelab.data import prepare, validation

    max_length = args.max_length or _param_or_default("train", "max_length")
    if tokenizer is not None:
        result = validation.validate_files(
            paths, tokenizer, max_length, args.format,
            max_truncated_ratio=_param_or_default("validate", "max_truncated_ratio"),
            train_on=_param_or_default("train", "train_on"), text_split=text_split,
            text_stride=_param_or_default("train", "text_stride"), mapping_for=mapping_for,
            untrainable=_param_or_default("validate", "untrainable"),
            max_dropped_ratio=_param_or_default("validate", "max_dropped_ratio"))
    else:
        loaded = prepare.load_files(paths, args.format, text_split=text_split,
                                    mapping_for=mapping_for)
        result = validation.ValidationResult(checked=len(loaded.examples), errors=loaded.errors)
    dropped = (f"; {len(result.dropped)} left out of training: no answer token fits"
               if result.dropped else "")
    return result.warnings, result.errors, (
        f"OK: {result.kept} examples in {len(paths)} files "
        f"({result.truncated} longer than max_length={max_length}{dropped})")


def _check_preference_files(args, paths: list[Path], tokenizer, mapping_for):
    """Preference data as the align stage reads it (align.format, align.max_length)."""
    from tunelab.data import preferences

    max_length = args.max_length or _param_or_default("align", "max_length")
    loaded = preferences.check_files(paths, _param_or_default("align", "format"), tokenizer,
                                     max_length, mapping_for)
    unpaired = [e["label"] for e in loaded.examples if "label" in e]
    counted = (f"{len(unpaired)} KTO examples ({sum(unpaired)} up, "
               f"{len(unpaired) - sum(unpaired)} down)" if unpaired
               else f"{len(loaded.examples)} preference pairs")
    fits = f"; answers fit max_length={max_length}" if tokenizer is not None else ""
    return [], loaded.errors, (f"OK: {counted} in {len(paths)} files (read as the align stage "
                               f"reads them{fits})")


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
    sections = check_params_file(args.path)
    print(f"OK: {args.path} ({', '.join(sections)})")
    return 0


def check_params_file(path, base: Path | None = None) -> list[str]:
    """validate-config's checks of a params file (import-config runs them too); returns its
    section names. ``base``: the model folder whose layers train.lora.target_modules must
    name (default: models/base beside the file)."""
    also_known = ()
    if "multitask" in params.read_file(path):  # multitask/params.yaml
        from tunelab.config import multitask

        multitask.load_params(path)
        also_known = ("multitask",)
    sections = params.load_all(path, also_known)  # the cross-key checks included
    # Named layers must exist in the base model, when it is there to look at (weights unread).
    base = Path(path).parent / DEFAULT_BASE if base is None else base
    if not isinstance(sections["train"].lora.target_modules, str) and (base / "config.json").is_file():
        from tunelab.train import training

        training.check_target_modules_of(base, sections["train"].lora.target_modules)
    return [*sections, *also_known]


def _param_or_default(section: str, key: str):
    """params.yaml's value, or the schema default when params.yaml is missing or invalid."""
    return getattr(_section_or_default(section), key)


def _section_or_default(section: str):
    try:
        return params.load(section)
    except params.ParamsError:
        return params.SECTIONS[section]()
