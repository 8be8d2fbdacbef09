"""The pieces every config model is built from, and its one-line errors.

Field types here take YAML values the way tunelab always has: a bool is not an int,
an int is a float, and "1e-4" is the float it means (YAML 1.1 reads an exponent
without a dot as a string). ``parse`` validates a mapping into a model and turns
pydantic's ValidationError into the first problem, in the mapping's own order, as
one line naming the file, the dotted key and the reason.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, RootModel,
                      ValidationError, model_validator)
from pydantic_core import PydanticCustomError

from tunelab.errors import ParamsError, USER_ERRORS
from tunelab.util.names import did_you_mean

TUNELAB_ERROR = "tunelab"  # pydantic error type of the messages written here, used as they are


def complaint(message: str) -> PydanticCustomError:
    """A validation error whose message is shown as it is (no context: braces stay)."""
    return PydanticCustomError(TUNELAB_ERROR, message)


def _expect(kind: type):
    def check(value):
        if isinstance(value, kind) and not (kind is not bool and isinstance(value, bool)):
            return value
        raise complaint(f"expected {kind.__name__}, got {type(value).__name__} {value!r}")
    return check


def _to_float(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    raise complaint(f"expected float, got {type(value).__name__} {value!r}")


def _names(value):
    if isinstance(value, str) or (isinstance(value, list) and value
                                  and all(isinstance(v, str) for v in value)):
        return value
    raise complaint(f"expected a string or a non-empty list of strings, got {value!r}")


def _minus_one_or_positive(value: int) -> int:
    if not (value == -1 or value > 0):
        raise complaint(f"must be -1 (train for `epochs`) or > 0, got {value}")
    return value


# A path that dvc.yaml writes into a stage's shell `cmd` (${prepare.raw_dir}): it is checked
# here rather than left to DVC's check that a dependency exists, which only happens to stop
# `data/raw;touch x`. Letters, digits and _ - . / only: any other character may be shell syntax,
# and a space splits the path into two arguments.
PATH_CHARACTERS = re.compile(r"[\w./-]")


def path_in_repo(value: str) -> str:
    if not value:
        raise complaint("'' is empty (name a file or folder inside the repository)")
    odd = next((c for c in value if not PATH_CHARACTERS.fullmatch(c)), None)
    if odd == " ":
        raise complaint(f"{value!r} has a space, which would split the stage's shell command "
                        "(dvc.yaml cmd) into two arguments (use _ or - instead)")
    if odd is not None:
        raise complaint(f"{value!r} has {odd!r}, which the shell running the stage's dvc.yaml "
                        "cmd could read as syntax (use letters, digits, _ - . /)")
    if value.startswith("/"):
        raise complaint(f"{value!r} is an absolute path (give one relative to the repository: "
                        "DVC tracks files inside it)")
    if ".." in value.split("/"):
        raise complaint(f"{value!r} has a '..' part, which can lead out of the repository "
                        "(give the path inside it without '..')")
    return value


def _path_in_repo_or_empty(value: str) -> str:
    return value and path_in_repo(value)


Int = Annotated[int, BeforeValidator(_expect(int))]
Float = Annotated[float, BeforeValidator(_to_float)]
Bool = Annotated[bool, BeforeValidator(_expect(bool))]
Str = Annotated[str, BeforeValidator(_expect(str))]
Names = Annotated[Union[str, list[str]], BeforeValidator(_names)]
StepLimit = Annotated[int, BeforeValidator(_expect(int)), AfterValidator(_minus_one_or_positive)]
RepoPath = Annotated[str, BeforeValidator(_expect(str)), AfterValidator(path_in_repo)]
RepoPathOrNone = Annotated[str, BeforeValidator(_expect(str)),  # "" = none
                           AfterValidator(_path_in_repo_or_empty)]


def choice(*options):
    """A Literal of ``options`` that first insists on their type (str or int)."""
    return Annotated[Literal[options], BeforeValidator(_expect(type(options[0])))]


class Section(BaseModel):
    """A mapping of known keys: unknown ones are errors, every default obeys its range,
    and an empty value (``lora:`` with nothing under it) means all defaults."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_defaults(cls, values):
        return values or {}


def parse(model: type[BaseModel], values, prefix: str, path: str | Path, error=ParamsError):
    """``model`` from ``values``; ``prefix`` is its dotted key for messages."""
    try:
        return model.model_validate(values)
    except ValidationError as err:
        first = first_in_file(err, values)
        raise carried(first) or error(f"{path}: {dotted(prefix, first['loc'])}: "
                                      f"{reason(model, first)}") from None


def first_in_file(err: ValidationError, values) -> dict:
    """The error of the key that comes first in ``values``, as a reader meets them."""
    return min(err.errors(), key=lambda e: _position(values, e["loc"]))


def carried(err: dict) -> ValueError | None:
    """A user error (DataError, ParamsError) that a validator raised with its whole
    message, file and key included: it is shown as it is."""
    raised = err.get("ctx", {}).get("error") if err["type"] == "value_error" else None
    return raised if isinstance(raised, USER_ERRORS) else None


def dotted(prefix: str, loc: tuple) -> str:
    return ".".join(str(part) for part in (prefix, *loc) if part != "")


def reason(model: type[BaseModel], err: dict) -> str:
    """One pydantic error in tunelab's words."""
    kind, loc, value = err["type"], err["loc"], err.get("input")
    if kind == TUNELAB_ERROR:
        return err["msg"]
    keys = tuple(part for part in loc if not isinstance(part, int))  # list positions out
    holder = model_at(model, keys[:-1]) if keys else model
    if kind == "extra_forbidden":
        known = [field.alias or name for name, field in holder.model_fields.items()]
        return f"unknown key{did_you_mean(loc[-1], known)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping, got {type(value).__name__}"
    if kind == "finite_number":
        return f"must be a finite number, got {value}"
    field = holder.model_fields.get(keys[-1]) if keys else None
    if kind == "literal_error" and field is not None:
        options = get_args(item_type(field.annotation) if keys != loc else field.annotation)
        return f"must be one of {', '.join(map(str, options))}, got {value!r}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"must be {bounds(field.metadata)}, got {value}"
    return err["msg"]


def item_type(annotation):
    """The choice inside ``list[choice(...)]``, without its validator."""
    item = get_args(annotation)[0]
    return get_args(item)[0] if get_origin(item) is Annotated else item


def bounds(metadata: list) -> str:
    """A field's range as text: "> 0", ">= 0" or "in [0, 1)"."""
    low = next((m for m in metadata if isinstance(m, (annotated_types.Gt, annotated_types.Ge))),
               None)
    high = next((m for m in metadata if isinstance(m, (annotated_types.Lt, annotated_types.Le))),
                None)
    if low is not None and high is not None:
        opening = "[" if isinstance(low, annotated_types.Ge) else "("
        closing = ")" if isinstance(high, annotated_types.Lt) else "]"
        return f"in {opening}{_bound(low):g}, {_bound(high):g}{closing}"
    if low is not None:
        return f"{'>' if isinstance(low, annotated_types.Gt) else '>='} {_bound(low):g}"
    return f"{'<' if isinstance(high, annotated_types.Lt) else '<='} {_bound(high):g}"


def _bound(constraint) -> float:
    for name in ("gt", "ge", "lt", "le"):
        if hasattr(constraint, name):
            return getattr(constraint, name)
    raise TypeError(constraint)


def model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel]:
    """The model class that validates what sits at ``loc`` inside ``model``."""
    for part in loc:
        model = child_model(model, part)
    return model


def child_model(model: type[BaseModel], key) -> Any:
    """The type of ``key`` in ``model``: a field's annotation, or the value type of a
    RootModel mapping (``check:``'s metric names), or of a plain mapping field."""
    if get_origin(model) is Annotated:
        model = get_args(model)[0]
    if get_origin(model) is dict:
        return get_args(model)[1]
    if issubclass(model, RootModel):
        return get_args(model.model_fields["root"].annotation)[1]
    return model.model_fields[key].annotation


def is_model(annotation) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _position(values, loc: tuple) -> tuple:
    """Where ``loc`` sits in ``values``, in file order, so the first problem is reported."""
    position = []
    for part in loc:
        if not isinstance(values, dict) or part not in values:
            return (*position, len(values) if isinstance(values, dict) else 0)
        position.append(list(values).index(part))
        values = values[part]
    return tuple(position)
