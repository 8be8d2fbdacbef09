"""`tunelab import-config`: another tool's training config as params.yaml values, and the
guide's hp_search.yaml as a sweep file.

``read`` loads the file and tells its format from its keys: each of FORMATS (from_axolotl,
from_llamafactory, from_guide) lists the keys only its configs have and holds the table
from its keys to tunelab's. ``plan_params`` turns the file into lines, Mapped (the tool's
key and value, the params key and its new and previous value) and Unmapped (the key and
why), and into params.yaml's new text, edited in place so every comment stays
(params_edit). Each value is first checked against the params schema on its own: one
outside tunelab's range or choices becomes an Unmapped line in the schema's words, never a
coerced value. ``plan_sweep`` does the same for hp_search.yaml into a sweep file. ``write``
puts the text in a temp file beside the target, runs the caller's check on it (the CLI
passes validate-config's, or the sweep loader `tunelab sweep --dry-run` runs) and renames
it into place only when that passes: a result that fails is one line, and nothing written.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pydantic import ValidationError
from ruamel.yaml.comments import CommentedMap

from tunelab.config import from_axolotl, from_guide, from_llamafactory, params, params_edit
from tunelab.config.key_maps import HUB_NOTE, Mapped, Unmapped, is_hub_id
from tunelab.config.schema import carried, first_in_file, reason
from tunelab.config.sweep_file import SweepFile
from tunelab.errors import ParamsError, USER_ERRORS

FORMATS = {"axolotl": from_axolotl, "llamafactory": from_llamafactory, "guide": from_guide}
SEARCH = "guide_search"  # the guide's hp_search.yaml: a sweep, not params
NAMES = {**{name: module.NAME for name, module in FORMATS.items()},
         SEARCH: from_guide.SEARCH_NAME}
CLUES = {**{name: module.CLUES for name, module in FORMATS.items()},
         SEARCH: from_guide.SEARCH_CLUES}
MIN_CLUES = 2  # keys of one format a file must have to be read as that format


@dataclass
class Source:
    path: Path
    raw: dict
    format: str        # a key of FORMATS, or SEARCH
    clues: list[str]   # the file's keys that told its format


@dataclass
class Plan:
    source: Source
    target: Path
    lines: list                                  # Mapped and Unmapped, in the file's order
    text: str                                    # the target's new text
    previous: dict = field(default_factory=dict)  # params key -> value before (params only)
    unset: list[str] = field(default_factory=list)  # the file's keys left empty (null)


def read(path: str | Path, sweep: bool = False) -> Source:
    """The file and its format; a file of no known format is one line saying so."""
    path = Path(path)
    raw = params.read_file(path)  # one-line errors for a missing file and bad YAML
    if raw and all(key in params.SECTIONS for key in raw):
        raise ParamsError(f"{path}: already a tunelab params file; check it with "
                          f"`tunelab validate-config {path}`")
    written_as = {spec.alias or name for name, spec in SweepFile.model_fields.items()}
    if "search_space" in raw and set(raw) <= written_as:
        raise ParamsError(f"{path}: already a tunelab sweep file; try it with "
                          f"`tunelab sweep {path} --dry-run`")
    found = {name: [key for key in raw if key in clues] for name, clues in CLUES.items()}
    best = max(found, key=lambda name: len(found[name]))
    if len(found[best]) < MIN_CLUES:
        raise ParamsError(f"{path}: not a config tunelab can import: it has too few keys of "
                          "an axolotl config (base_model, sequence_len, ...), a LLaMA-Factory "
                          "config (model_name_or_path, finetuning_type, ...) or the guide's "
                          "lora_config.yaml or hp_search.yaml (lora_config, search_space, ...)")
    if sweep and best != SEARCH:
        raise ParamsError(f"{path}: {NAMES[best]}, not a hyperparameter search (the guide's "
                          f"hp_search.yaml layout); import it without --sweep")
    if not sweep and best == SEARCH:
        raise ParamsError(f"{path}: {NAMES[best]}, a hyperparameter search; import it as a "
                          f"sweep file with `tunelab import-config --sweep {path}`")
    return Source(path, raw, best, found[best])


def plan_params(source: Source, target: str | Path) -> Plan:
    """The lines of the import and params.yaml's new text (``target`` is the params file)."""
    target = Path(target)
    _not_the_source(source, target)
    if not target.is_file():
        raise ParamsError(f"{target}: file not found (import-config sets values in a tunelab "
                          "params.yaml, keeping its comments: run it in the repository, or "
                          "give --out)")
    module = FORMATS[source.format]
    raw, unset = _without_nulls(source.raw, module.NULL_IS_A_VALUE)
    converted = module.convert(raw)
    document = params_edit.load(target)
    method = next((line.value for line in converted.lines if isinstance(line, Mapped)
                   and line.key == "train.method"), None) or _current(document, "train.method")
    lines = [_for_run(line, converted.run, method) for line in converted.lines]
    lines = _hub_noted(_without_conflicts([_checked(line) for line in lines]))
    lines.sort(key=lambda line: _position(line.source, raw))
    previous = {}
    for line in lines:
        if isinstance(line, Mapped) and line.key not in previous:
            previous[line.key] = _current(document, line.key)
            if previous[line.key] != line.value:
                params_edit.set_value(document, line.key, line.value)
    return Plan(source, target, lines, params_edit.text(document), previous, unset)


def plan_sweep(source: Source, target: str | Path) -> Plan:
    """The lines of the import and the sweep file's text."""
    target = Path(target)
    _not_the_source(source, target)
    raw, unset = _without_nulls(source.raw, ())
    lines = [_checked_search(line) for line in from_guide.convert_search(raw)]
    lines = _with_grid_checked(_without_conflicts(lines))
    document = CommentedMap()
    for key in ("strategy", "metric", "direction", "max_trials", "seed"):
        document.update({line.key: line.value for line in lines
                         if isinstance(line, Mapped) and line.key == key})
    space = CommentedMap()
    for line in lines:
        if isinstance(line, Mapped) and line.key.startswith("search_space."):
            space[line.key.removeprefix("search_space.")] = params_edit.one_line(line.value)
    document["search_space"] = space
    document.yaml_set_start_comment(
        f"Imported from {source.path.name} by `tunelab import-config --sweep`.\n"
        f"List the trials: tunelab sweep {target} --dry-run    Run them: tunelab sweep {target}")
    return Plan(source, target, lines, params_edit.text(document), unset=unset)


def write(plan: Plan, check: Callable[[Path], object], dry_run: bool = False):
    """Check the new text as the target, then put it in place (unless ``dry_run``); returns
    what ``check`` returned. A failed check is a ParamsError naming the target."""
    if not dry_run:
        plan.target.parent.mkdir(parents=True, exist_ok=True)
    beside = plan.target.parent if plan.target.parent.is_dir() else None  # else a temp folder
    with tempfile.TemporaryDirectory(prefix=f".{plan.target.name}.", dir=beside) as folder:
        scratch = Path(folder) / plan.target.name
        scratch.write_text(plan.text, encoding="utf-8")
        try:
            checked = check(scratch)
        except USER_ERRORS as err:
            left = "is unchanged" if plan.target.exists() else "was not written"
            raise ParamsError(f"{str(err).replace(str(scratch), str(plan.target))} (with the "
                              f"imported values; {plan.target} {left})") from None
        if not dry_run:
            if plan.target.exists():
                shutil.copymode(plan.target, scratch)
            os.replace(scratch, plan.target)
    return checked


def report(plan: Plan) -> list[str]:
    """What the import maps (old -> new) and what it cannot (why), a line each."""
    source = plan.source
    out = [f"{source.path}: {NAMES[source.format]} (keys {', '.join(source.clues[:4])})"]
    mapped = [line for line in plan.lines if isinstance(line, Mapped)]
    unmapped = [line for line in plan.lines if isinstance(line, Unmapped)]
    if mapped:
        out.append(f"mapped into {plan.target}:")
        out += [f"  {_mapped_text(line, plan.previous)}" for line in mapped]
    if unmapped:
        out.append("not mapped:")
        out += [f"  {line.source}: {line.reason}" for line in unmapped]
    if plan.unset:
        out.append(f"left empty (null) in {source.path.name}, nothing to import: "
                   f"{', '.join(plan.unset)}")
    return out


def summary(plan: Plan, dry_run: bool = False, detail: str = "") -> str:
    """The last line: what was written (``detail``: a few words about it)."""
    unmapped = sum(isinstance(line, Unmapped) for line in plan.lines)
    not_mapped = f"{unmapped} key{'' if unmapped == 1 else 's'} not mapped"
    done = f"dry run, {plan.target} not written" if dry_run else f"wrote {plan.target}"
    done += f" ({detail})" if detail else ""
    if not plan.previous:  # a sweep file
        return f"{done}; {not_mapped}"
    changed = sum(plan.previous[key] != value for key, value in _final_values(plan).items())
    return (f"{done}: {changed} value{'' if changed == 1 else 's'} "
            f"{'would change' if dry_run else 'changed'}, {len(plan.previous) - changed} "
            f"already so; {not_mapped}")


# --- the lines --------------------------------------------------------------------------

def _for_run(line, run: str, method: str):
    """A "*." key as the section of the config's run; learning_rate as full_learning_rate
    for a full fine-tune (tunelab keeps one rate per method)."""
    if not isinstance(line, Mapped) or not line.key.startswith("*."):
        return line
    name = line.key.removeprefix("*.")
    if run == "align" and name not in params.AlignParams.model_fields:
        return Unmapped(line.source, f"it sets this config's preference run, and tunelab's "
                                     f"align step has no {name} (train.{name} is the SFT run's)")
    if run == "train" and name == "learning_rate" and method == "full":
        name = "full_learning_rate"
    return Mapped(line.source, line.source_value, f"{run}.{name}", line.value, line.note)


def _checked(line):
    """The line, or an Unmapped one where the params schema refuses its value."""
    if not isinstance(line, Mapped):
        return line
    problem = schema_problem(line.key, line.value)
    return Unmapped(line.source, f"{line.key}: {problem}") if problem else line


def schema_problem(key: str, value) -> str | None:
    """Why params.yaml's schema refuses ``value`` at dotted ``key``, or None."""
    section, _, rest = key.partition(".")
    model = params.SECTIONS[section]
    nested = value
    for part in reversed(rest.split(".")):
        nested = {part: nested}
    try:
        model.model_validate(nested)
    except ValidationError as err:
        first = first_in_file(err, nested)
        return str(carried(first) or reason(model, first))
    return None


def _checked_search(line):
    """A search_space line whose every value the schema accepts (else Unmapped), and a
    max_trials that is a whole number >= 1."""
    if not isinstance(line, Mapped):
        return line
    if line.key.startswith("search_space."):
        key = line.key.removeprefix("search_space.")
        problem = next(filter(None, (schema_problem(key, value) for value in line.value)), None)
        return Unmapped(line.source, f"{key}: {problem}") if problem else line
    if line.key in ("max_trials", "seed") and (isinstance(line.value, bool)
                                               or not isinstance(line.value, int)
                                               or line.value < (line.key == "max_trials")):
        return Unmapped(line.source, f"expected a whole number, got {line.value!r}")
    return line


def _with_grid_checked(lines: list) -> list:
    """A grid runs every point: a max_trials below their number cannot be kept."""
    strategy = next((line.value for line in lines if isinstance(line, Mapped)
                     and line.key == "strategy"), "grid")
    points = math.prod(len(line.value) for line in lines if isinstance(line, Mapped)
                       and line.key.startswith("search_space."))
    return [Unmapped(line.source, f"the grid has {points} points and a tunelab grid runs them "
                                  f"all (max_trials only caps it); to run {line.value}, set "
                                  f"search_strategy: random or bayesian")
            if strategy == "grid" and isinstance(line, Mapped) and line.key == "max_trials"
            and line.value < points else line for line in lines]


def _without_conflicts(lines: list) -> list:
    """Two keys that set one params key to different values: neither is taken."""
    values = {}
    for line in lines:
        if isinstance(line, Mapped):
            values.setdefault(line.key, []).append(line)
    kept = []
    for line in lines:
        others = [other for other in values.get(getattr(line, "key", None), [])
                  if other.value != line.value]
        kept.append(Unmapped(line.source, f"{line.key}: {_shown(line.value)}, but "
                                          f"{others[0].source} gives {_shown(others[0].value)}; "
                                          f"set it yourself") if others else line)
    return kept


def _hub_noted(lines: list) -> list:
    return [Mapped(line.source, line.source_value, line.key, line.value, HUB_NOTE)
            if isinstance(line, Mapped) and line.key == "model.base" and is_hub_id(line.value)
            else line for line in lines]


def _without_nulls(raw: dict, keep: tuple[str, ...]) -> tuple[dict, list[str]]:
    """``raw`` less its empty (null) keys, one level into mappings, and their names."""
    clean, unset = {}, []
    for key, value in raw.items():
        if value is None and key not in keep:
            unset.append(key)
            continue
        if isinstance(value, dict):
            unset += [f"{key}.{inner}" for inner, item in value.items() if item is None]
            value = {inner: item for inner, item in value.items() if item is not None}
        clean[key] = value
    return clean, unset


def _position(source: str, raw: dict) -> int:
    """Where the line's key is in the file (datasets[0].path: at datasets)."""
    order = [name for key, value in raw.items()
             for name in [key, *(f"{key}.{inner}" for inner in
                                 (value if isinstance(value, dict) else ()))]]
    for candidate in (source, source.split("[")[0], source.split(".")[0]):
        if candidate in order:
            return order.index(candidate)
    return -1  # a key the file leaves out (axolotl's adapter): what it implies comes first


def _current(document, key: str):
    """params.yaml's value at ``key``, or the schema default where the file has none."""
    value = params_edit.value_at(document, key)
    if value is not params_edit.MISSING:
        return value
    section, *parts = key.split(".")
    value = params.SECTIONS[section]()
    for part in parts:
        value = getattr(value, part)
    return value


def _final_values(plan: Plan) -> dict:
    return {line.key: line.value for line in plan.lines if isinstance(line, Mapped)}


def _not_the_source(source: Source, target: Path) -> None:
    if target.exists() and target.resolve() == source.path.resolve():
        raise ParamsError(f"{target}: is the file being imported; give --out another file")


def _mapped_text(line: Mapped, previous: dict) -> str:
    text = f"{line.source}: {_shown(line.source_value)} → {line.key}: {_shown(line.value)}"
    if line.key in previous:
        before = previous[line.key]
        text += " (unchanged)" if before == line.value else f" (was {_shown(before)})"
    return text + (f"; {line.note}" if line.note else "")


def _shown(value) -> str:
    """A value as YAML writes it in one line: true, null, 0.0002, [q_proj, v_proj]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(_shown(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_shown(item)}" for key, item in value.items()) + "}"
    return str(value)
