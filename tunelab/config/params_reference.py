"""docs/params.md, the params reference, generated so it cannot drift from what it describes.

Each key's type, default and allowed values come from the pydantic models in
``tunelab.config.params`` (the only copy of each default and range: Field constraints,
Literal choices, and a phrase per validator below); its meaning comes from its comment
in params.yaml, and the value the shipped sample sets where that differs from the default.
``render`` builds the page, ``write`` saves it when it changed: docs/hooks/params_reference.py
calls it before every `mkdocs build` (`make docs`), and tests/test_docs.py checks that the
committed page equals ``render()`` and covers every schema key and every params.yaml comment.
"""

from __future__ import annotations

import inspect
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel

from tunelab.chat import families
from tunelab.config import params, schema

PAGE = "docs/params.md"


def write(params_path: str | Path = params.PARAMS_FILE, page_path: str | Path = PAGE) -> bool:
    """Write the reference to ``page_path`` when its text changed; True when it did."""
    text = render(params_path)
    page = Path(page_path)
    if page.is_file() and page.read_text(encoding="utf-8") == text:
        return False
    page.write_text(text, encoding="utf-8")
    return True


def render(params_path: str | Path = params.PARAMS_FILE) -> str:
    """The whole page: the introduction, then one table per section (and nested section)."""
    text = Path(params_path).read_text(encoding="utf-8")
    notes = read_comments(text)
    loaded = params.load_all(params_path)
    shipped = {name: section.model_dump() for name, section in loaded.items()}
    lines = [INTRODUCTION, "```yaml", *notes.header, "```", ""]
    for name, model in params.SECTIONS.items():
        if model is params.CheckParams:
            lines += check_section(notes, loaded[name])
        else:
            lines += section_tables(name, model, notes, shipped.get(name, {}))
    return "\n".join(lines).rstrip("\n") + "\n"


INTRODUCTION = """\
# Params reference

*Generated from `tunelab/config/params.py` (each key's type, default and allowed values) and
`params.yaml` (its comments, and the values the shipped sample sets) by
`tunelab.config.params_reference`: `make docs` rewrites this page, so edit those two files,
not this one.*

`params.yaml` is the manual: every knob has a one-line comment with its meaning and range,
shown here beside what the schema allows. The main ones: `train.learning_rate`,
`train.max_steps` / `epochs`, `train.batch_size` × `gradient_accumulation`,
`train.max_length`, `train.lora.{r,alpha,dropout,target_modules}`, `train.precision`
(`auto`: bf16/fp16 on a GPU, fp32 on a CPU), `model.chat_template`, `train.reasoning`,
`evaluate.max_new_tokens`.

Every stage checks all of `params.yaml` before it does any work, and
`tunelab validate-config` runs the same checks (and checks named `target_modules` against
`models/base`): a mistake is one line naming the key, e.g. `params.yaml: train.lerning_rate:
unknown key (did you mean 'learning_rate'?)`. A section or key left out takes the default
below; an empty section (`lora:` with nothing under it) takes all of them. Changing a value
reruns only the stages that read it ([How the pipeline works](pipeline.md)); try one with
`dvc exp run -S KEY=VALUE` ([Experiments](experiments.md)).

*Default* is the schema's; where the shipped `params.yaml` sets another value for the
sample task, that value follows it. The file opens with:
"""


# --- params.yaml's comments ---------------------------------------------------------------

KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[\w.]+):(?P<rest>.*)$")
INLINE_COMMENT = re.compile(r"\s#\s?(?P<comment>.*)$")


@dataclass
class Comments:
    """params.yaml's comments: the file's header, each dotted key's lines (those above it
    and those after it on its line and the lines below), and the lines a mapping closes
    with that no key follows (the commented-out ``check:`` entries)."""
    header: list[str] = field(default_factory=list)
    by_key: dict[str, list[str]] = field(default_factory=dict)
    closing: dict[str, list[str]] = field(default_factory=dict)

    def of(self, key: str) -> str:
        """The key's comment as one line (a word hyphenated across lines joined again)."""
        text = ""
        for line in self.by_key.get(key, []):
            text += line if text.endswith("-") or not text else " " + line
        return text


def read_comments(text: str) -> Comments:
    """A comment line right below a key that has a comment on its own line, and indented
    deeper than the key, goes on with that comment; any other comment line belongs to the
    next key at its indentation, or, when none follows, to the mapping it sits in."""
    notes = Comments()
    keys: list[tuple[int, str]] = []             # the open keys: (indent, name)
    pending: list[tuple[int, str]] = []          # comment lines waiting for their key
    last: tuple[int, str, bool] | None = None    # the last key: indent, dotted, commented

    def close_pending(before_indent: int) -> None:
        if pending and pending[0][0] > before_indent:
            holder = ".".join(name for indent, name in keys if indent < pending[0][0])
            notes.closing.setdefault(holder, []).extend(line for _, line in pending)
            pending.clear()

    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            column = raw.index("#")
            comment = stripped[1:].strip()
            if last is None:
                notes.header.append(stripped)
            elif last[2] and not pending and column > last[0]:
                notes.by_key[last[1]].append(comment)
            else:
                pending.append((column, comment))
            continue
        match = KEY_LINE.match(raw)
        if match is None:
            raise ValueError(f"params.yaml: cannot read this line for the reference: {raw!r}")
        indent = len(match["indent"])
        close_pending(indent)
        while keys and keys[-1][0] >= indent:
            keys.pop()
        keys.append((indent, match["key"]))
        dotted = ".".join(name for _, name in keys)
        inline = INLINE_COMMENT.search(match["rest"])
        lines = [line for _, line in pending] + ([inline["comment"]] if inline else [])
        pending.clear()
        if lines:
            notes.by_key[dotted] = lines
        last = (indent, dotted, inline is not None)
    close_pending(-1)
    return notes


# --- the schema ---------------------------------------------------------------------------

# What each validator allows, in the reference's words, by the validator's qualified name
# in tunelab.config. A validator missing here stops the page from being built
# (``validator_rules``), so a new rule cannot go undocumented.
RULES = {
    "_template_choice": lambda: ("`auto` (the tokenizer's own), a family: "
                                      + ", ".join(f"`{name}`" for name in families.FAMILIES)
                                      + ", or a `.jinja` file"),
    "path_in_repo": lambda: ("a relative path inside the repository: letters, digits, "
                                  "`_ - . /`, no `..`, no space"),
    "_path_in_repo_or_empty": lambda: ('`""` (none) or a relative path inside the '
                                            "repository: letters, digits, `_ - . /`"),
    "_minus_one_or_positive": lambda: "-1 (train for `epochs`) or > 0",
    "_in_heldout_dir": lambda: f"a file in `{params.HELDOUT_DIR}/`",
    "_in_general_dir": lambda: f"a file in `{params.GENERAL_DIR}/`",
    "_scorer_spec": lambda: f"`auto` or `{params.SCORER_DIR}/FILE.py:FUNCTION`",
    "_each_target_once": lambda: "no two of your fields to the same one",
    "_reward_weights": lambda: ("score names of `evaluate.scorer`, weights >= 0, "
                                     "not all 0"),
    "_criterion_names": lambda: ("one or more names (letters, digits, `_`), each once, "
                                      "none of " + ", ".join(f"`{name}`" for name in
                                                             params.JUDGE_SUMMARY_KEYS)),
    "TrainParams._stride_within_window": lambda: "at most `train.max_length`",
    "AlignParams._beta_not_negative": lambda: ">= 0, or `null`: the objective's default",
    "ExportParams._each_type_once": lambda: "one or more, each once",
}

# Checks that span several keys of a section (params._check_across); tests/test_docs.py
# breaks each one and expects the error.
ACROSS_KEYS = {
    "prepare": ["`val_ratio` + `test_ratio` < 1: the rest is the train split"],
    "train": ["`save_steps` is a multiple of `logging_steps` (a resumed run logs the same "
              "curve)",
              "with `early_stopping_patience` > 0, `eval_steps` is a multiple of "
              "`logging_steps` (checkpoints are then saved at each evaluation)"],
    "align": ["`save_steps` is a multiple of `logging_steps`",
              "`objective: kto` needs `batch_size` >= 2"],
}

TABLE_HEAD = ["| key | type | default | allowed | what it does (params.yaml) |",
              "|---|---|---|---|---|"]


def section_tables(name: str, model: type[BaseModel], notes: Comments,
                   shipped: dict) -> list[str]:
    """``## name``: its comment, a row per key, the cross-key checks; then a ``###`` part for
    each nested section (train.lora, ...)."""
    lines = [f"## {name}", ""]
    if notes.of(name):
        lines += [cell(notes.of(name)), ""]
    lines += part_table(name, model, notes, shipped)
    if name in ACROSS_KEYS:
        lines += ["Checked across keys:", ""] + [f"- {rule}" for rule in ACROSS_KEYS[name]]
        lines.append("")
    return lines


def part_table(prefix: str, model: type[BaseModel], notes: Comments, shipped: dict) -> list[str]:
    rows, nested = [], []
    for key, info in model.model_fields.items():
        dotted = f"{prefix}.{key}"
        if schema.is_model(info.annotation):
            nested += [f"### {dotted}", ""]
            if notes.of(dotted):
                nested += [cell(notes.of(dotted)), ""]
            nested += part_table(dotted, info.annotation, notes, shipped.get(key, {}))
            continue
        default = info.get_default(call_default_factory=True)
        shown_default = f"`{yaml_text(default)}`"
        if key in shipped and shipped[key] != default:
            shown_default += f" (params.yaml: `{yaml_text(shipped[key])}`)"
        rules = [*info.metadata, *field_validators(model).get(key, [])]
        rows.append(row(dotted, type_text(info.annotation), shown_default,
                        allowed(info.annotation, rules), notes.of(dotted)))
        rows += entry_rows(dotted, info.annotation, notes, default)
    return TABLE_HEAD + rows + [""] + nested


def entry_rows(dotted: str, annotation, notes: Comments, default) -> list[str]:
    """Rows for the commented entries of a mapping key (align.reward's score weights)."""
    if get_origin(annotation) is not dict:
        return []
    value_type = get_args(annotation)[1]
    return [row(key, type_text(value_type), f"`{yaml_text(default.get(key[len(dotted) + 1:]))}`",
                f"as `{dotted}`", notes.of(key))
            for key in notes.by_key if key.startswith(dotted + ".")]


def check_section(notes: Comments, shipped: params.CheckParams) -> list[str]:
    """``check:`` maps metric names to rules: the rule's two keys, then the shipped rules."""
    lines = ["## check", "", cell(notes.of("check")), "", *TABLE_HEAD]
    for key, info in params.MetricTolerance.model_fields.items():
        lines.append(row(f"check.METRIC.{key}", type_text(info.annotation),
                         f"`{yaml_text(info.default)}`", allowed(info.annotation, info.metadata),
                         ""))
    if shipped.tolerances == params.CheckParams().tolerances:
        lines += ["", "The rules `params.yaml` ships, also the defaults of an empty `check:`:"]
    else:
        lines += ["", "The rules `params.yaml` ships:"]
    lines += ["", "| key | direction | tolerance | note (params.yaml) |", "|---|---|---|---|"]
    for metric, rule in shipped.tolerances.items():
        lines.append(f"| `check.{metric}` | {rule.direction} | {yaml_text(rule.tolerance)} | "
                     f"{cell(notes.of('check.' + metric))} |")
    if notes.closing.get("check"):
        lines += ["", "Commented out at its end, to switch on when they apply:", "", "```yaml",
                  *(f"# {line}" for line in notes.closing["check"]), "```"]
    return lines + [""]


def row(key: str, kind: str, default: str, allowed_values: str, comment: str) -> str:
    return f"| `{key}` | {cell(kind)} | {default} | {allowed_values} | {cell(comment)} |"


def type_text(annotation) -> str:
    annotation, _ = split_annotated(annotation)
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "choice"
    if origin in (Union, types.UnionType):
        kinds = [type_text(arg) for arg in args]
        return " or ".join("null" if kind == "NoneType" else kind for kind in kinds)
    if origin is list:
        return f"list of {type_text(args[0])}s"
    if origin is dict:
        return f"mapping of string to {type_text(args[1])}"
    if schema.is_model(annotation):
        return "{" + ", ".join(annotation.model_fields) + "}"
    return {str: "string", int: "int", float: "float", bool: "bool"}.get(annotation,
                                                                       annotation.__name__)


def allowed(annotation, metadata: list) -> str:
    """Choices, a numeric range and each validator's rule, joined; "any" when none."""
    annotation, inner = split_annotated(annotation)
    found = []
    if get_origin(annotation) is Literal:
        found.append(", ".join(f"`{option}`" for option in get_args(annotation)))
    if get_origin(annotation) is list:
        item, _ = split_annotated(get_args(annotation)[0])
        if get_origin(item) is Literal:
            found.append("each of " + ", ".join(f"`{option}`" for option in get_args(item)))
    if get_origin(annotation) is dict:
        value, value_metadata = split_annotated(get_args(annotation)[1])
        found += [f"values: {rule}" for rule in validator_rules(value_metadata)]
    constraints = [m for m in [*inner, *metadata] if type(m).__name__ in ("Gt", "Ge", "Lt", "Le")]
    if constraints:
        found.append(schema.bounds(constraints))
    found += validator_rules([*inner, *metadata])
    return "; ".join(found) or "any"


def validator_rules(metadata: list) -> list[str]:
    found = []
    for item in metadata:
        if not isinstance(item, AfterValidator):
            continue
        function = item.func
        names = inspect.getclosurevars(function).nonlocals
        if "names" in names and "what" in names:  # params._one_of(names, what)
            found.append(f"a {names['what']}: " + ", ".join(f"`{n}`" for n in names["names"]))
        elif function.__qualname__ in RULES:
            found.append(RULES[function.__qualname__]())
        else:
            raise KeyError(f"{function.__qualname__}: no rule text in "
                           "tunelab.config.params_reference.RULES (add one)")
    return found


def split_annotated(annotation) -> tuple[Any, list]:
    """``Annotated[T, ...]`` as T and its metadata (pydantic keeps a field's own
    metadata apart; a dict's value type keeps its Annotated)."""
    if get_origin(annotation) is Annotated:
        inner, *metadata = get_args(annotation)
        return inner, metadata
    return annotation, []


def field_validators(model: type[BaseModel]) -> dict[str, list]:
    """A model's ``@field_validator`` functions by field name."""
    found: dict[str, list] = {}
    for decorator in model.__pydantic_decorators__.field_validators.values():
        for name in decorator.info.fields:
            found.setdefault(name, []).append(AfterValidator(decorator.func))
    return found


def yaml_text(value) -> str:
    """A value as params.yaml writes it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return re.sub(r"e([+-])0*(\d)", lambda m: "e" + m[1].lstrip("+") + m[2], f"{value:g}")
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, BaseModel):
        return yaml_text(value.model_dump())
    if isinstance(value, list):
        return "[" + ", ".join(yaml_text(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {yaml_text(item)}" for key, item in value.items()) + "}"
    return str(value)


def cell(text: str) -> str:
    """Text safe in a Markdown table cell (and outside one): pipes, stars, braces and angle
    brackets of params.yaml's prose stay literal (a trailing {...} would otherwise be read
    as the cell's HTML attributes)."""
    for char in "|*{}":
        text = text.replace(char, "\\" + char)
    return text.replace("<", "&lt;")
